//! Grams: the three-character sequences of messages the index keys on, folded as `ILIKE` would, and the
//! blocks of a week each is in.

use std::collections::HashSet;

use super::{BITMAP_BYTES, MAX_QUERY_GRAMS, MICROS_PER_BLOCK};

/// The fold of one character for grams: its simple lowercase.
pub(super) fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    // `to_lowercase` is the full mapping; its first character is the simple one (U+0130 → 'i').
    c.to_lowercase().next().unwrap_or(c)
}

/// A gram's key: three ASCII characters packed exactly (21 bits); otherwise a hash with the top bit set,
/// where a collision only adds candidates.
pub(super) fn gram_key(a: char, b: char, c: char) -> i32 {
    if a.is_ascii() && b.is_ascii() && c.is_ascii() {
        return (a as i32) | (b as i32) << 7 | (c as i32) << 14;
    }
    let mut hash: u32 = 0x811c_9dc5;
    for ch in [a, b, c] {
        for byte in (ch as u32).to_le_bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    (hash | 0x8000_0000) as i32
}

/// Every gram of `text`, into `out`.
pub fn grams(text: &str, out: &mut HashSet<i32>) {
    each_gram(text, |gram| {
        out.insert(gram);
    });
}

/// Calls `f` with each gram of `text` in order, repeats included. ASCII text (most logs) takes a path of
/// its own: one byte per character, the key rolled along instead of rebuilt.
pub(super) fn each_gram(text: &str, mut f: impl FnMut(i32)) {
    if text.is_ascii() {
        let mut key = 0i32;
        for (n, byte) in text.bytes().enumerate() {
            // Bits 0..7 hold the oldest character, as in `gram_key`.
            key = (key >> 7) | i32::from(byte.to_ascii_lowercase()) << 14;
            if n >= 2 {
                f(key);
            }
        }
        return;
    }
    let mut window = ['\0'; 3];
    for (n, c) in text.chars().map(fold).enumerate() {
        window = [window[1], window[2], c];
        if n >= 2 {
            f(gram_key(window[0], window[1], window[2]));
        }
    }
}

/// The grams a message must contain to contain every term; empty when no term has three characters.
pub fn query_grams(terms: &[String]) -> Vec<i32> {
    let mut all = HashSet::new();
    for term in terms {
        grams(term, &mut all);
    }
    let mut all: Vec<i32> = all.into_iter().collect();
    all.sort_unstable();
    all.truncate(MAX_QUERY_GRAMS);
    all
}

/// The block (since the Unix epoch) holding `micros`.
pub(super) fn block_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_BLOCK)
}

/// A set of blocks of one week, stored as a sorted list of u16 when short, else as a bitmap. In memory a
/// vector, sorted and unique after [`Blocks::tidy`] (logs arrive about in time order, so pushing skips
/// most repeats by itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks(pub(super) Vec<u16>);

impl Blocks {
    pub(crate) fn insert(&mut self, block: u16) {
        if self.0.last() != Some(&block) {
            self.0.push(block);
        }
    }

    pub(super) fn tidy(&mut self) {
        self.0.sort_unstable();
        self.0.dedup();
    }

    /// Whether `block` is in the set (a tidy one).
    pub(crate) fn contains(&self, block: u16) -> bool {
        self.0.binary_search(&block).is_ok()
    }

    pub(crate) fn merge(&mut self, other: &Blocks) {
        self.0.extend_from_slice(&other.0);
        self.tidy();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        if self.0.len() * 2 < BITMAP_BYTES {
            self.0.iter().flat_map(|m| m.to_le_bytes()).collect()
        } else {
            let mut bits = vec![0u8; BITMAP_BYTES];
            for &m in self.0.iter().filter(|m| usize::from(**m) < BITMAP_BYTES * 8) {
                bits[usize::from(m) / 8] |= 1 << (m % 8);
            }
            bits
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Blocks {
        let mut set = Vec::new();
        if bytes.len() == BITMAP_BYTES {
            for (i, byte) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        set.push((i * 8 + bit) as u16);
                    }
                }
            }
        } else {
            set.extend(bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])));
        }
        let mut blocks = Blocks(set);
        blocks.tidy();
        blocks
    }
}
