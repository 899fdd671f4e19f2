//! The codec of every `ledger.v1` service: prost's, after a scan that refuses a message whose top-level
//! fields repeat more than [`max_repeated`] times, before anything is decoded.
//!
//! A protobuf message names no count up front: 10 MiB of empty `LogRecord`s is five million records, each
//! a struct of several hundred bytes once decoded. The scan walks the wire format without allocating, so
//! such a message costs one pass over its bytes instead of gigabytes.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::bytes::Buf;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// A process-wide setting, not a codec's field: tonic's generated services build their codec with
/// `Default`, so nothing could hand one the configured limit. Set once at start (`set_max_repeated`).
static MAX_REPEATED: AtomicUsize = AtomicUsize::new(1000);

/// Sets how often a top-level field may repeat in a request (the batch limit,
/// `stages.validate.max_request_logs`); the daemon sets it once, before serving gRPC.
pub fn set_max_repeated(max: usize) {
    MAX_REPEATED.store(max, Ordering::Relaxed);
}

/// How often a top-level field may repeat.
pub fn max_repeated() -> usize {
    MAX_REPEATED.load(Ordering::Relaxed)
}

/// The field that repeats more than `max` times at the top level of `message`, if one does. Malformed
/// wire data ends the scan; prost then says what is wrong with it.
pub fn over_repeated(mut message: &[u8], max: usize) -> Option<u32> {
    let mut counts: Vec<(u32, usize)> = Vec::new();
    while message.has_remaining() {
        let key = prost::encoding::decode_varint(&mut message).ok()?;
        let field = u32::try_from(key >> 3).ok()?;
        let skip = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut message).ok()?;
                0
            }
            1 => 8,
            2 => usize::try_from(prost::encoding::decode_varint(&mut message).ok()?).ok()?,
            5 => 4,
            _ => return None,
        };
        if skip > message.remaining() {
            return None;
        }
        message.advance(skip);
        match counts.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => {
                *n += 1;
                if *n > max {
                    return Some(field);
                }
            }
            None => counts.push((field, 1)),
        }
    }
    None
}

/// How many fields sit at `path` (field numbers, outermost first) under `message`, counting up to
/// `max + 1`: the logs of a message that nests them (OTLP's `resource_logs.scope_logs.log_records` is
/// `[1, 2, 2]`, Loki's `streams.entries` `[1, 2]`), found without decoding. Malformed wire data ends the
/// count where it is; prost then says what is wrong with it.
pub fn count_nested(message: &[u8], path: &[u32], max: usize) -> usize {
    fn walk(mut message: &[u8], path: &[u32], max: usize, count: &mut usize) {
        let Some((first, rest)) = path.split_first() else { return };
        while message.has_remaining() && *count <= max {
            let Ok(key) = prost::encoding::decode_varint(&mut message) else { return };
            let skip = match key & 7 {
                0 => {
                    if prost::encoding::decode_varint(&mut message).is_err() {
                        return;
                    }
                    0
                }
                1 => 8,
                2 => match prost::encoding::decode_varint(&mut message).ok().and_then(|l| usize::try_from(l).ok()) {
                    Some(len) => len,
                    None => return,
                },
                5 => 4,
                _ => return,
            };
            if skip > message.remaining() {
                return;
            }
            if key >> 3 == u64::from(*first) && key & 7 == 2 {
                if rest.is_empty() {
                    *count += 1;
                } else {
                    walk(&message[..skip], rest, max, count);
                }
            }
            message.advance(skip);
        }
    }
    let mut count = 0;
    walk(message, path, max, &mut count);
    count
}

/// prost's codec behind the repeat bound: on the top-level fields (every `ledger.v1` request), or on the
/// fields at a path for a message that nests its logs ([`BoundedCodec::nested`]).
pub struct BoundedCodec<T, U> {
    inner: ProstCodec<T, U>,
    path: Option<&'static [u32]>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec { inner: ProstCodec::default(), path: None }
    }
}

impl<T, U> BoundedCodec<T, U> {
    /// Bounds the fields at `path` (see [`count_nested`]) instead of the top-level ones.
    pub fn nested(path: &'static [u32]) -> Self {
        BoundedCodec { inner: ProstCodec::default(), path: Some(path) }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { inner: self.inner.decoder(), path: self.path, _message: PhantomData }
    }
}

pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    path: Option<&'static [u32]>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let max = max_repeated();
        // The buffer holds the whole message in one piece.
        if buf.chunk().len() == buf.remaining() {
            match self.path {
                None => {
                    if let Some(field) = over_repeated(buf.chunk(), max) {
                        return Err(Status::invalid_argument(format!(
                            "a batch holds at most {max} logs (field {field} repeats more often)"
                        )));
                    }
                }
                Some(path) => {
                    if count_nested(buf.chunk(), path, max) > max {
                        return Err(Status::invalid_argument(format!("a batch holds at most {max} logs")));
                    }
                }
            }
        }
        // prost's errors (malformed wire data, nesting past its recursion limit) are the client's: tonic
        // would call them INTERNAL.
        self.inner.decode(buf).map_err(|e| match e.code() {
            tonic::Code::Internal => {
                Status::invalid_argument(format!("the message cannot be decoded: {}", e.message()))
            }
            _ => e,
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1::{IngestRequest, LogRecord};

    #[test]
    fn counts_nested_fields_without_decoding() {
        use crate::loki::{EntryAdapter, PushRequest, StreamAdapter};
        let stream = |n| StreamAdapter { entries: vec![EntryAdapter::default(); n], ..StreamAdapter::default() };
        let push = PushRequest { streams: vec![stream(3), stream(0), stream(4)] }.encode_to_vec();
        assert_eq!(count_nested(&push, &[1, 2], 100), 7);
        assert_eq!(count_nested(&push, &[1, 2], 5), 6, "stops one past the limit");
        assert_eq!(count_nested(&push, &[1], 100), 3);
        assert_eq!(count_nested(&[0xff, 0xff], &[1, 2], 5), 0);
    }

    #[test]
    fn counts_top_level_repeats_without_decoding() {
        let request = IngestRequest { logs: vec![LogRecord::default(); 1001] };
        let bytes = request.encode_to_vec();
        assert_eq!(over_repeated(&bytes, 1000), Some(1));
        assert_eq!(over_repeated(&bytes, 1001), None);
        let one = IngestRequest {
            logs: vec![LogRecord { message: "m".into(), level: "INFO".into(), ..LogRecord::default() }],
        };
        assert_eq!(over_repeated(&one.encode_to_vec(), 1), None);
        assert_eq!(over_repeated(&[0xff, 0xff], 1), None, "malformed: left to prost");
    }
}
