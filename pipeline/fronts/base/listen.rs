//! The one accept loop every listener shares (REST, gRPC, syslog): what a connection may hold before it has
//! said anything, so that no client, however many connections it opens, takes a listener from the others.
//!
//! - At most `max_connections` connections are open at once; past it the loop stops accepting (the kernel's
//!   backlog holds the rest) instead of spending memory on them.
//! - At most `max_connections_per_address` of them come from one client address (an IPv6 /64 counts as one
//!   address, as a client holds a whole /64): past it, a new connection from that address is closed at once.
//! - A TLS handshake, and then the connection's first bytes (an HTTP request line or the HTTP/2 preface),
//!   must arrive within `handshake_timeout`: a connection that never speaks is closed then, so silent
//!   sockets cannot fill the slots. Before this bound, HTTP's version detection waited forever.
//! - [`serve_http`] serves hyper connections (HTTP/1 and HTTP/2, or HTTP/2 only for gRPC) on it; an HTTP/2
//!   connection with no request in flight for `idle_timeout` is closed with a GOAWAY, so live but idle
//!   connections that answer pings do not hold slots forever.
//! - On shutdown the loop stops accepting, closes the socket, and waits for its connections to finish what
//!   they are doing (each is told to close gracefully).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A listener's limits (from `[server]`, or `[syslog]` for the syslog listener).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections from one address (an IPv6 /64) at most; never more than `max_connections`.
    pub max_connections_per_address: usize,
    /// For a TLS handshake, and then for the first bytes of the connection.
    pub handshake_timeout: Duration,
    /// Seconds an HTTP/2 connection may stay without a request in flight.
    pub idle_timeout: Duration,
}

/// The address a client is counted under (connections, login limits): its IPv4 address, or its IPv6 /64
/// (a client is handed a whole /64, so its addresses within it are one client).
pub(crate) fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Open connections per client address.
#[derive(Default)]
struct Addresses(Mutex<HashMap<IpAddr, usize>>);

impl Addresses {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let key = client_address(ip);
        let mut open = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { addresses: self.clone(), key })
    }
}

/// One connection counted against its address; given back when dropped.
struct AddressSlot {
    addresses: Arc<Addresses>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.addresses.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What an open connection holds: one of the listener's slots and one of its address's.
pub struct Slot {
    _listener: OwnedSemaphorePermit,
    _address: AddressSlot,
}

/// A connection's transport: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection, handshaken, under its listener's limits until it is dropped.
pub struct Connection {
    stream: FirstBytes<Stream>,
    pub peer: SocketAddr,
    _slot: Slot,
}

/// A listening socket with its limits and, when configured, TLS.
pub struct Listener {
    tcp: TcpListener,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Bytes a connection must send within the handshake timeout (then its protocol's own timeouts apply).
    first_bytes: usize,
    slots: Arc<Semaphore>,
    addresses: Arc<Addresses>,
}

/// HTTP/2's connection preface: hyper's version detection reads this many bytes before it serves.
pub const HTTP_FIRST_BYTES: usize = 24;

impl Listener {
    pub(crate) fn new(
        tcp: TcpListener,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
        first_bytes: usize,
    ) -> Listener {
        Listener {
            tcp,
            limits,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            first_bytes,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            addresses: Arc::default(),
        }
    }

    /// The next connection that fits the limits: waits for a free slot, closes at once those over their
    /// address's share.
    async fn accept(&self) -> (TcpStream, SocketAddr, Slot) {
        let per_address = self.limits.max_connections_per_address.clamp(1, self.limits.max_connections.max(1));
        loop {
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; wait for ever rather than spin.
                return std::future::pending().await;
            };
            let (stream, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.addresses.take(peer.ip(), per_address) {
                Some(address) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, Slot { _listener: permit, _address: address });
                }
                None => {
                    crate::metrics::metrics().connection_closed(crate::metrics::ConnectionClosed::PerAddressCap);
                    tracing::debug!(%peer, "connection refused: too many from this address");
                }
            }
        }
    }

    /// Accepts until `shutdown` fires, then waits for the connections' tasks to end. Each connection is
    /// handshaken (TLS, first bytes) in a task of its own, then given to `handle` with a token that fires
    /// when the connection should close gracefully.
    pub(crate) async fn run<F, Fut>(self, shutdown: CancellationToken, handle: F)
    where
        F: Fn(Connection, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tracker = TaskTracker::new();
        let handle = Arc::new(handle);
        loop {
            let (tcp, peer, slot) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.accept() => accepted,
            };
            let (tls, limits, first_bytes) = (self.tls.clone(), self.limits, self.first_bytes);
            let (handle, shutdown) = (handle.clone(), shutdown.clone());
            tracker.spawn(async move {
                let stream = match tls {
                    None => Stream::Plain(tcp),
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                            _ => {
                                tracing::debug!(%peer, "TLS handshake failed or timed out");
                                return;
                            }
                        }
                    }
                };
                let stream = FirstBytes::new(stream, first_bytes, limits.handshake_timeout);
                handle(Connection { stream, peer, _slot: slot }, shutdown).await;
            });
        }
        // Closing the socket at once: new clients are refused by the kernel instead of waiting.
        drop(self.tcp);
        tracker.close();
        tracker.wait().await;
    }
}

pin_project_lite::pin_project! {
    /// A stream that must deliver its first `needed` bytes before a deadline; then it is the stream itself.
    pub struct FirstBytes<S> {
        #[pin]
        inner: S,
        needed: usize,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<S> FirstBytes<S> {
    fn new(inner: S, needed: usize, within: Duration) -> FirstBytes<S> {
        let deadline = (needed > 0).then(|| Box::pin(tokio::time::sleep(within)));
        FirstBytes { inner, needed, deadline }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(result) => {
                *this.needed = this.needed.saturating_sub(buf.filled().len() - before);
                if *this.needed == 0 {
                    *this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    crate::metrics::metrics().connection_closed(crate::metrics::ConnectionClosed::Silent);
                    let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "nothing sent in time");
                    Poll::Ready(Err(error))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<tokio::time::Instant>,
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Completes once the connection has had no request in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = *self.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.in_flight.load(Ordering::SeqCst) == 0 && since.elapsed() >= timeout {
                return;
            }
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 { timeout } else { timeout - since.elapsed() };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

/// A request in flight, from its head until its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it ends.
    struct Tracked<B> {
        #[pin]
        inner: B,
        _in_flight: InFlight,
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body<Data = axum::body::Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Which HTTP versions a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    /// HTTP/1.1 and HTTP/2, told apart by the first bytes (REST).
    Any,
    /// HTTP/2 only (gRPC).
    Http2,
}

/// Serves `service` on every connection of `listener` until `shutdown`, then lets open connections finish
/// their requests. `prepare` runs on each request before the service (the peer address is given).
pub(crate) async fn serve_http<S, B, P>(
    listener: Listener,
    versions: Versions,
    service: S,
    prepare: P,
    shutdown: CancellationToken,
) where
    P: Fn(axum::http::Request<Body>, SocketAddr) -> axum::http::Request<Body> + Clone + Send + Sync + 'static,
    S: tower::Service<axum::http::Request<Body>, Response = axum::http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use tower::ServiceExt;
    let limits = listener.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.handshake_timeout);
    // A connection that stops answering pings is closed; one that answers them but sends no request is
    // closed after the idle timeout below.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.handshake_timeout)
        .keep_alive_timeout(limits.handshake_timeout);
    if versions == Versions::Http2 {
        builder = builder.http2_only();
    }
    listener
        .run(shutdown, move |connection, closing| {
            let (builder, peer) = (builder.clone(), connection.peer);
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                idle_since: Mutex::new(tokio::time::Instant::now()),
            });
            let (tracked, prepare) = (activity.clone(), prepare.clone());
            let service = service
                .clone()
                .map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
                    prepare(request.map(Body::new), peer)
                })
                .map_future(move |response| {
                    let in_flight = tracked.start();
                    async move {
                        let response: axum::http::Response<B> = response.await?;
                        Ok::<_, std::convert::Infallible>(
                            response.map(|inner| Body::new(Tracked { inner, _in_flight: in_flight })),
                        )
                    }
                });
            async move {
                let connection = builder.serve_connection(TokioIo::new(connection), TowerToHyperService::new(service));
                tokio::pin!(connection);
                let mut closing_now = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                            break;
                        }
                        _ = closing.cancelled(), if !closing_now => {
                            connection.as_mut().graceful_shutdown();
                            closing_now = true;
                        }
                        _ = activity.idle_for(limits.idle_timeout), if !closing_now => {
                            connection.as_mut().graceful_shutdown();
                            closing_now = true;
                        }
                    }
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("an IPv6 address");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("an IPv6 address");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("an IPv6 address");
        assert_eq!(client_address(a), client_address(b));
        assert_ne!(client_address(a), client_address(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(client_address(mapped), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn an_address_holds_at_most_its_share() {
        let addresses = Arc::new(Addresses::default());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let held: Vec<_> = (0..3).filter_map(|_| addresses.take(ip, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(addresses.take(ip, 3).is_none(), "a fourth from the same address");
        assert!(addresses.take(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 3).is_some(), "another address");
        drop(held);
        assert!(addresses.take(ip, 3).is_some(), "given back when closed");
    }
}
