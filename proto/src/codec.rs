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

static MAX_REPEATED: AtomicUsize = AtomicUsize::new(1000);

/// Sets how often a top-level field may repeat in a request (the batch limit, `max_batch_logs`).
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

/// prost's codec behind the repeat bound.
pub struct BoundedCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec(ProstCodec::default())
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
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder { inner: self.0.decoder(), _message: PhantomData }
    }
}

pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let max = max_repeated();
        // The buffer holds the whole message in one piece.
        if buf.chunk().len() == buf.remaining()
            && let Some(field) = over_repeated(buf.chunk(), max)
        {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {max} logs (field {field} repeats more often)"
            )));
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
