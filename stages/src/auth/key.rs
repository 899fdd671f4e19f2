//! The API key format: `ledger_` + 26 random base62 characters + a 6-character base62 checksum.
//!
//! 26 base62 characters carry 26·log2(62) ≈ 155 random bits. The checksum is CRC-32 of the random part,
//! written as 6 base62 digits (62^6 > 2^32), so a typo or a truncated paste is refused before any lookup.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "ledger_";
const RANDOM_LEN: usize = 26;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// How many characters of a key (after `ledger_`) are kept in clear to let people tell their keys apart.
const DISPLAY_PREFIX_LEN: usize = 8;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not an API key. The caller answers 401 with one message for all of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key does not start with `ledger_`")]
    Prefix,
    #[error("the key does not have 32 characters after `ledger_`")]
    Length,
    #[error("the key has a character outside base62")]
    Alphabet,
    #[error("the key's checksum does not match")]
    Checksum,
}

/// SHA-256 of a full key: what storage keeps and what caches are keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<KeyDigest> {
        <[u8; 32]>::try_from(bytes).ok().map(KeyDigest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, for cache keys.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares in constant time, so that comparing a looked-up digest leaks nothing by its timing.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyDigest {
    // A digest is not a secret, but there is no reason to print all of it either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..12])
    }
}

/// A well-formed API key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

impl ApiKey {
    /// A new random key from the operating system's CSPRNG (via `rand`'s thread RNG, reseeded from it).
    pub fn generate() -> ApiKey {
        let mut rng = rand::rng();
        let random: String = (0..RANDOM_LEN).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])).collect();
        let checksum = checksum(random.as_bytes());
        ApiKey(format!("{KEY_PREFIX}{random}{checksum}"))
    }

    /// Checks the format and checksum; never touches storage.
    pub fn parse(s: &str) -> Result<ApiKey, KeyFormatError> {
        let body = s.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        if body.len() != BODY_LEN {
            return Err(KeyFormatError::Length);
        }
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::Alphabet);
        }
        let (random, sum) = body.split_at(RANDOM_LEN);
        if checksum(random.as_bytes()) != sum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(ApiKey(s.to_owned()))
    }

    /// Whether a credential looks like an API key at all (as opposed to a session token).
    pub fn looks_like_key(s: &str) -> bool {
        s.starts_with(KEY_PREFIX)
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }

    /// `ledger_` and the first 8 characters: shown in listings so people can tell keys apart.
    pub fn prefix(&self) -> &str {
        &self.0[..KEY_PREFIX.len() + DISPLAY_PREFIX_LEN]
    }
}

fn checksum(random: &[u8]) -> String {
    let mut n = u64::from(crc32fast::hash(random));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose_secret().len(), KEY_PREFIX.len() + BODY_LEN);
        assert_eq!(ApiKey::parse(a.expose_secret()), Ok(a.clone()));
        assert!(a.prefix().starts_with("ledger_"));
        assert_eq!(a.prefix().len(), 15);
    }

    #[test]
    fn a_single_typo_is_caught_by_the_checksum() {
        let key = ApiKey::generate();
        let secret = key.expose_secret();
        for i in KEY_PREFIX.len()..secret.len() {
            let mut bytes = secret.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).expect("ascii");
            assert_eq!(ApiKey::parse(&typo), Err(KeyFormatError::Checksum), "position {i}");
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        let key = ApiKey::generate();
        let secret = key.expose_secret();
        assert_eq!(ApiKey::parse(&secret[..secret.len() - 1]), Err(KeyFormatError::Length));
        assert_eq!(ApiKey::parse(&secret.replace("ledger_", "ledgr_")), Err(KeyFormatError::Prefix));
        let mut bad = secret.to_owned();
        bad.replace_range(10..11, "-");
        assert_eq!(ApiKey::parse(&bad), Err(KeyFormatError::Alphabet));
        assert_eq!(ApiKey::parse(""), Err(KeyFormatError::Prefix));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose_secret()));
    }

    #[test]
    fn digest_is_sha256_and_compares_in_constant_time() {
        let d = KeyDigest::of("abc");
        assert_eq!(d.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(d.ct_eq(&KeyDigest::of("abc")));
        assert!(!d.ct_eq(&KeyDigest::of("abd")));
    }
}
