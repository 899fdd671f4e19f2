//! The fingerprint stage: the grouping key of a log, 64 bits, printed as 16 lowercase hex characters.
//!
//! Rules (also in the README):
//! 1. A client's `fingerprint` wins: 16 lowercase hex characters are taken as they are; any other string
//!    is hashed.
//! 2. A log with an `exception` is keyed by the exception's `type` and the top frame of its stacktrace
//!    (Python: the last `File "…"` line; Java, JavaScript, .NET: the first `at …` line; otherwise the first
//!    line), both normalized as below. The log's message does not count. Without a stacktrace, the
//!    exception's normalized `value` stands in for the frame.
//! 3. Otherwise the message is keyed after normalization: each quoted string ('…', "…" or `…` opened
//!    after a space or punctuation) becomes one placeholder, and so does each word that holds a digit
//!    (numbers, UUIDs, hex ids with digits, IP addresses, ports, timestamps, versions, line numbers) or is
//!    8 or more hex letters. Words are runs of letters, digits and `. - : _ +`; `/`, spaces and other
//!    punctuation separate them, so `/users/42/orders` keeps its shape.
//!
//! The hash is FNV-1a 64 over the normalized text: fixed, so keys are stable across versions and
//! machines. Normalization streams into the hash: no allocation per log.

use crate::log::{Exception, LogRecord};
use crate::request::{Ingest, IngestError};
use crate::stage::{Stage, StageLayer};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Stands for a placeholder in the hashed text: a byte no UTF-8 text contains.
const PLACEHOLDER: u8 = 0xff;
/// Separates the parts of an exception key.
const SEPARATOR: u8 = 0xfe;

#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(FNV_OFFSET)
    }

    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(FNV_PRIME);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'+') || b >= 0x80
}

fn is_quote(b: u8) -> bool {
    matches!(b, b'\'' | b'"' | b'`')
}

/// Whether a word varies between occurrences of the same event.
fn is_variable(word: &[u8]) -> bool {
    word.iter().any(u8::is_ascii_digit) || (word.len() >= 8 && word.iter().all(u8::is_ascii_hexdigit))
}

/// Feeds the normalized form of `text` to the hash.
fn normalize_into(text: &str, hash: &mut Fnv) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_word_byte(b) {
            let start = i;
            while i < bytes.len() && is_word_byte(bytes[i]) {
                i += 1;
            }
            let word = &bytes[start..i];
            if is_variable(word) {
                hash.byte(PLACEHOLDER)
            } else {
                hash.bytes(word)
            }
            continue;
        }
        let opens_quote = is_quote(b) && (i == 0 || !is_word_byte(bytes[i - 1]));
        if opens_quote && let Some(len) = bytes[i + 1..].iter().position(|&c| c == b) {
            hash.byte(b);
            hash.byte(PLACEHOLDER);
            hash.byte(b);
            i += len + 2;
            continue;
        }
        hash.byte(b);
        i += 1;
    }
}

/// The stack frame that identifies where an exception was raised.
fn top_frame(stacktrace: &str) -> Option<&str> {
    let lines = || stacktrace.lines().map(str::trim).filter(|l| !l.is_empty());
    // Python prints the most recent call last.
    if let Some(frame) = lines().rfind(|l| l.starts_with("File \"")) {
        return Some(frame);
    }
    // Java, JavaScript, .NET print it first.
    if let Some(frame) = lines().find(|l| l.starts_with("at ")) {
        return Some(frame);
    }
    lines().find(|l| !l.starts_with("Traceback"))
}

fn exception_key(exception: &Exception) -> u64 {
    let mut hash = Fnv::new();
    hash.bytes(b"exception");
    hash.byte(SEPARATOR);
    hash.bytes(exception.kind.as_bytes());
    hash.byte(SEPARATOR);
    match exception.stacktrace.as_deref().and_then(top_frame) {
        Some(frame) => normalize_into(frame, &mut hash),
        None => normalize_into(exception.value.as_deref().unwrap_or(""), &mut hash),
    }
    hash.0
}

/// The key of a client's own `fingerprint` (rule 1): 16 lowercase hex characters as they are, any other
/// string hashed. The validate stage applies it, so it holds with this stage left out.
pub fn client_key(given: &str) -> u64 {
    if given.len() == 16 && given.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return u64::from_str_radix(given, 16).unwrap_or_default();
    }
    let mut hash = Fnv::new();
    hash.bytes(b"client");
    hash.byte(SEPARATOR);
    hash.bytes(given.as_bytes());
    hash.0
}

/// The fingerprint of a log, by the rules above.
pub fn fingerprint(record: &LogRecord) -> u64 {
    if let Some(given) = &record.fingerprint_override {
        return client_key(given);
    }
    if let Some(exception) = &record.exception {
        return exception_key(exception);
    }
    let mut hash = Fnv::new();
    normalize_into(&record.message, &mut hash);
    hash.0
}

pub struct Fingerprint;

impl Fingerprint {
    pub fn layer() -> StageLayer<Fingerprint> {
        StageLayer::new(Fingerprint)
    }
}

#[async_trait::async_trait]
impl Stage for Fingerprint {
    const NAME: &'static str = "fingerprint";

    async fn apply(&self, request: &mut Ingest) -> Result<(), IngestError> {
        for record in &mut request.records {
            // A client's own key was applied by validate.
            if record.fingerprint_override.take().is_none() {
                record.fingerprint = fingerprint(record);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Level;

    fn log(message: &str) -> LogRecord {
        LogRecord { level: Level::Error, ..crate::testing::log(message) }
    }

    fn fp(message: &str) -> u64 {
        fingerprint(&log(message))
    }

    fn with_exception(message: &str, kind: &str, value: Option<&str>, stacktrace: Option<&str>) -> u64 {
        let mut record = log(message);
        record.exception =
            Some(Exception { kind: kind.into(), value: value.map(Into::into), stacktrace: stacktrace.map(Into::into) });
        fingerprint(&record)
    }

    #[test]
    fn messages_differing_only_in_variable_parts_share_a_key() {
        let same = [
            ("User 42 logged in", "User 1337 logged in"),
            ("order 3fa85f64-5717-4562-b3fc-2c963f66afa6 failed", "order 9b2d1c1e-0f6a-4a5b-8c3d-7e8f9a0b1c2d failed"),
            ("connection from 10.0.0.12:51234 refused", "connection from 192.168.1.7:443 refused"),
            ("request took 12.5ms", "request took 980.25ms"),
            ("object deadbeefcafe0123 missing", "object 0123456789abcdef missing"),
            ("cache key 'user:17:profile' expired", "cache key 'session:abc' expired"),
            (
                "job \"nightly-export\" failed at 2026-11-27T08:00:00Z",
                "job \"weekly\" failed at 2025-01-01T23:59:59.999+02:00",
            ),
            ("GET /api/users/42/orders 500", "GET /api/users/7/orders 503"),
            ("retry 3/5 after 1.5s", "retry 4/5 after 3s"),
            ("connect to [2001:db8::1]:5432 timed out", "connect to [fe80::1ff:fe23:4567:890a]:5432 timed out"),
            ("trace a3f9e4c1b2d8e7f6 sampled", "trace ffffffffffffffff sampled"),
        ];
        for (a, b) in same {
            assert_eq!(fp(a), fp(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn different_events_get_different_keys() {
        let different = [
            ("User 42 logged in", "User 42 logged out"),
            ("GET /api/users/42/orders 500", "GET /api/users/42/invoices 500"),
            ("disk full", "disk almost full"),
            ("can't connect to db", "can't connect to cache"),
        ];
        for (a, b) in different {
            assert_ne!(fp(a), fp(b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn apostrophes_inside_words_do_not_open_quotes() {
        assert_ne!(fp("can't reach 'db-main'"), fp("can't write 'db-main'"));
        assert_eq!(fp("can't reach 'db-main'"), fp("can't reach 'db-replica'"));
    }

    const PYTHON_A: &str = "Traceback (most recent call last):\n  File \"/app/main.py\", line 10, in <module>\n    run()\n  File \"/app/orders.py\", line 42, in charge\n    raise PaymentError(order_id)\n";
    const PYTHON_B: &str = "Traceback (most recent call last):\n  File \"/app/main.py\", line 12, in <module>\n    run()\n  File \"/app/orders.py\", line 57, in charge\n    raise PaymentError(order_id)\n";
    const PYTHON_OTHER: &str = "Traceback (most recent call last):\n  File \"/app/main.py\", line 10, in <module>\n    run()\n  File \"/app/refunds.py\", line 42, in refund\n    raise PaymentError(order_id)\n";
    const JAVA: &str = "java.lang.NullPointerException: user was null\n\tat com.shop.Cart.total(Cart.java:88)\n\tat com.shop.Checkout.run(Checkout.java:31)\n";
    const JAVA_LATER: &str = "java.lang.NullPointerException: cart 7 was null\n\tat com.shop.Cart.total(Cart.java:91)\n\tat com.shop.Checkout.run(Checkout.java:35)\n";

    #[test]
    fn exceptions_are_keyed_by_type_and_top_frame_not_message() {
        let a = with_exception("payment 17 failed", "PaymentError", Some("order 17"), Some(PYTHON_A));
        let b = with_exception("charging card of user 99 blew up", "PaymentError", Some("order 99"), Some(PYTHON_B));
        assert_eq!(a, b, "line numbers and messages vary; type and frame do not");
        assert_ne!(a, with_exception("payment 17 failed", "PaymentError", None, Some(PYTHON_OTHER)));
        assert_ne!(a, with_exception("payment 17 failed", "ValueError", None, Some(PYTHON_A)));
        let j1 = with_exception("NPE", "java.lang.NullPointerException", None, Some(JAVA));
        let j2 = with_exception("NPE again", "java.lang.NullPointerException", None, Some(JAVA_LATER));
        assert_eq!(j1, j2);
        assert_ne!(a, fp("payment 17 failed"), "an exception changes the key");
        assert_eq!(
            with_exception("x", "KeyError", Some("'user_42'"), None),
            with_exception("y", "KeyError", Some("'user_77'"), None)
        );
    }

    #[test]
    fn top_frames() {
        assert_eq!(top_frame(PYTHON_A), Some("File \"/app/orders.py\", line 42, in charge"));
        assert_eq!(top_frame(JAVA), Some("at com.shop.Cart.total(Cart.java:88)"));
        assert_eq!(top_frame("goroutine 1 [running]:\nmain.main()"), Some("goroutine 1 [running]:"));
    }

    #[test]
    fn client_overrides_win() {
        let mut record = log("anything");
        record.fingerprint_override = Some("00000000000000ff".into());
        assert_eq!(fingerprint(&record), 0xff);
        record.fingerprint_override = Some("checkout-timeouts".into());
        let custom = fingerprint(&record);
        record.message = "something else".into();
        assert_eq!(fingerprint(&record), custom);
    }

    #[test]
    fn keys_are_stable_across_versions() {
        // Pinned values: a change here regroups every stored error. Change only with a migration plan.
        assert_eq!(fp("User 42 logged in"), 0xca9c_b61f_3a8b_e7a6_u64, "{:016x}", fp("User 42 logged in"));
    }
}
