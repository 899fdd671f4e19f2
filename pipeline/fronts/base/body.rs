//! Request bodies, as every HTTP ingestion front reads them: admitted first ([`admit`]: the credential, then
//! room among the bodies this instance holds), read within a size limit and a deadline
//! (`server.body_read_timeout_secs` from the first poll to the end, [`deadline_body`]; a slower one is
//! answered 408), decompressed and parsed off the async workers when large ([`read_body`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use http_body::Frame;
use ledger_stages::Protocol;

use crate::error::ApiError;
use crate::ingest::{Admitted, Ingestion, Room, decode};

/// Uncompressed bodies at least this large, and every compressed one, are decoded off the async workers.
const DECODE_INLINE_MAX: usize = 256 * 1024;

/// A request body that did not arrive within `server.body_read_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTimeout;

/// Whether an error (or any error in its chain) is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    /// A body that fails with [`BodyTimeout`] once its deadline passes, however it trickles in.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        timeout: Duration,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
    }
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        // The clock starts when the handler first reads, not when the head arrived.
        if this.deadline.is_none() {
            this.deadline.set(Some(tokio::time::sleep(*this.timeout)));
        }
        if let Some(deadline) = this.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        this.inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives a request's body a deadline for its whole read.
pub(crate) fn deadline_body(request: Request, timeout: Duration) -> Request {
    request.map(|inner| Body::new(DeadlineBody { inner, timeout, deadline: None }))
}

pub(crate) fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request's media type, without parameters, trimmed and lowercased (`None` without a Content-Type).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    header_text(headers, header::CONTENT_TYPE).and_then(|v| v.split(';').next()).map(|m| m.trim().to_ascii_lowercase())
}

/// Why a body could not be read: too large, too slow, or cut off (the client went away: nobody reads this
/// answer, but its outcome is `cancelled`).
fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge { limit_bytes: limit };
        }
        source = e.source();
    }
    if is_body_timeout(error) { ApiError::RequestTimeout } else { ApiError::BodyIncomplete }
}

/// Reads a body within `limit` (before and after its Content-Encoding) and the body read timeout, and
/// hands the decompressed bytes to `parse`: what every HTTP ingestion front does with its body. `room`
/// grows with what has arrived (a slow client holds what it sent, not what it announced), then covers the
/// decompression; it is left holding the decoded size, which the parsed request keeps about.
pub(crate) async fn read_body<T: Send + 'static>(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    room: &mut Room,
    parse: impl FnOnce(&[u8]) -> Result<T, ApiError> + Send + 'static,
) -> Result<(T, usize), ApiError> {
    use http_body_util::BodyExt;
    let encoding = decode::encoding(header_text(headers, header::CONTENT_ENCODING))?;
    let mut raw = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e, limit))?;
        let Ok(data) = frame.into_data() else { continue };
        if raw.len() + data.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit_bytes: limit });
        }
        room.grow_to(raw.len() + data.len())?;
        raw.extend_from_slice(&data);
    }
    let inline = encoding == decode::Encoding::Identity && raw.len() < DECODE_INLINE_MAX;
    if encoding != decode::Encoding::Identity {
        // The compressed bytes and what they may inflate to, held together while decompressing.
        room.grow_to(raw.len() + limit)?;
    }
    let work = move || {
        let decoded = decode::decompress(&raw, encoding, limit)?;
        parse(&decoded).map(|parsed| (parsed, decoded.len()))
    };
    // Decided by the body as read, not by what Content-Length claims; a compressed body may inflate up to
    // the limit, so only a small uncompressed one is decoded on the async worker.
    let (parsed, size) =
        if inline { work()? } else { tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?? };
    room.shrink_to(size);
    Ok((parsed, size))
}

/// What every HTTP ingestion front does before reading its body: the credential (from the headers alone:
/// an unknown key never makes the daemon read the body), then an empty room for the body among every body
/// this instance holds, which [`read_body`] grows as the body arrives. The room is held until the request
/// has its answer.
pub(crate) async fn admit(
    ingestion: &Ingestion,
    front: Protocol,
    credential: Option<&str>,
) -> Result<(Admitted, Room), ApiError> {
    let admitted = ingestion.admit(front, credential).await?;
    Ok((admitted, ingestion.room()))
}
