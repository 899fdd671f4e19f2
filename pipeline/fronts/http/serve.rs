//! Serving the REST router on the shared accept loop ([`crate::fronts::listen`]: connection caps, handshake
//! and idle timeouts), with what only REST adds: a request body has `server.body_read_timeout_secs` from
//! its first poll to its end ([`deadline_body`]); a slower one is answered 408. Each request carries its
//! peer address as [`axum::extract::ConnectInfo`], for per-IP limits.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use http_body::Frame;

/// A request body that did not arrive within `server.body_read_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received in time")]
pub struct BodyTimeout;

/// Whether an error (or any error in its chain) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
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
pub fn deadline_body(request: Request, timeout: Duration) -> Request {
    request.map(|inner| Body::new(DeadlineBody { inner, timeout, deadline: None }))
}

/// Serves the REST router on `listener` (see [`crate::fronts::listen`] for its limits) until `shutdown`, then
/// lets open connections finish their requests. Each request carries its peer address and a body deadline.
pub async fn serve(
    listener: crate::fronts::listen::Listener,
    app: Router,
    body_read_timeout: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let prepare = move |mut request: Request, peer: std::net::SocketAddr| {
        request.extensions_mut().insert(ConnectInfo(peer));
        deadline_body(request, body_read_timeout)
    };
    crate::fronts::listen::serve_http(listener, crate::fronts::listen::Versions::Any, app, prepare, shutdown).await;
}
