//! HTTP clients for deployments: HTTP/2 with prior knowledge (h2c) for `http://` deployments,
//! HTTP/1.1 for those registered with `use_http_11`. Connections are pooled per address and
//! HTTP/2 streams multiplexed, so concurrent invocations share few connections; they
//! acknowledge what they receive at once (see [`QuickAckConnector`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{CaptureConnection, Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// HTTP/2 flow-control windows towards deployments: how much a deployment may send ahead of
/// what the invoker has read, per connection and per invocation.
const H2_CONNECTION_WINDOW: u32 = 64 << 20;
const H2_STREAM_WINDOW: u32 = 2 << 20;

/// Invocations one pooled connection carries before the pool retires it (it finishes what it
/// carries, new invocations get a new connection). Servers close connections after a number of
/// requests with a GOAWAY — hypercorn (the Python SDK's usual server) and nginx after 1000 —
/// and a stream that races that GOAWAY can be accepted and then never answered, leaving its
/// invocation to wait for the inactivity timeout. Retiring the connection first never meets
/// that limit; a new connection costs one handshake on a few hundred invocations.
pub(crate) const MAX_INVOCATIONS_PER_CONNECTION: u32 = 500;

/// A request body: the stream of protocol messages the invoker writes.
pub(crate) type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

type HttpClient = Client<QuickAckConnector, RequestBody>;

/// The two clients; cheap to clone.
#[derive(Clone)]
pub struct InvokerClient {
    pub(crate) h2: HttpClient,
    pub(crate) h1: HttpClient,
}

impl InvokerClient {
    pub fn new(connect_timeout: Duration) -> Result<Self, std::io::Error> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let connector = QuickAckConnector(connector);
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            // Fixed, large windows: every concurrent invocation of a deployment shares one
            // connection, and the SDKs send each message as its own small DATA frame. The
            // HTTP/2 client closes a connection whose unread small frames exceed half its
            // connection window ("too_many_data_frames"), failing every attempt on it; with
            // the 64 KiB default that took a thousand busy invocations a few frames each.
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(40))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .build(connector.clone());
        let h1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(300))
            .build(connector);
        Ok(Self { h2, h1 })
    }
}

/// Connects like [`HttpConnector`], and then acknowledges every segment the deployment sends
/// at once. SDK servers that leave Nagle's algorithm on (the Rust SDK's does) hold their second
/// small write of a response until the first is acknowledged, and Linux delays the ACKs of a
/// long-lived connection by up to 40 ms: without this, one call in five waited that long.
#[derive(Clone)]
pub(crate) struct QuickAckConnector(HttpConnector);

impl tower::Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            connecting.await.map(|stream| QuickAck {
                stream,
                invocations: InvocationsCarried::default(),
            })
        })
    }
}

/// How many invocations a connection was given, shared by its pooled handle and its
/// [`Connected`] metadata (which a request can capture).
#[derive(Clone, Default)]
struct InvocationsCarried(Arc<AtomicU32>);

/// Counts an invocation on the connection `captured` says the request went out on, and marks
/// that connection as not to be reused once it carried [`MAX_INVOCATIONS_PER_CONNECTION`].
pub(crate) fn count_invocation(captured: &CaptureConnection) {
    let metadata = captured.connection_metadata();
    let Some(connected) = metadata.as_ref() else { return };
    let mut extras = hyper::http::Extensions::new();
    connected.get_extras(&mut extras);
    if let Some(InvocationsCarried(count)) = extras.get::<InvocationsCarried>()
        && count.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_INVOCATIONS_PER_CONNECTION
    {
        connected.poison();
    }
}

/// A deployment connection that re-arms `TCP_QUICKACK` after each read (the kernel leaves
/// quick-ACK mode again by itself, so once per connection is not enough).
pub(crate) struct QuickAck {
    stream: TokioIo<TcpStream>,
    invocations: InvocationsCarried,
}

impl QuickAck {
    fn acknowledge_at_once(&self) {
        // Best effort: a failure only brings the delayed ACKs back.
        let _ = socket2::SockRef::from(self.stream.inner()).set_tcp_quickack(true);
    }
}

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.stream.connected().extra(self.invocations.clone())
    }
}

impl hyper::rt::Read for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            self.acknowledge_at_once();
        }
        read
    }
}

impl hyper::rt::Write for QuickAck {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
}

/// `encodeURIComponent`: what SDKs decode `x-restate-service-key` with.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Joins `path` onto the deployment URI's path, keeping its query string.
pub(crate) fn endpoint_url(uri: &str, path: &str) -> String {
    let (base, query) = match uri.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (uri, None),
    };
    let mut url = format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_leaves_the_deployment_connection_acknowledging_at_once() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"hello").await.unwrap();
            stream
        });
        let connector = QuickAckConnector(HttpConnector::new());
        let uri: Uri = format!("http://{address}").parse().unwrap();
        let mut connection = tower::ServiceExt::oneshot(connector, uri).await.unwrap();
        let _server_side = server.await.unwrap();
        let socket = socket2::SockRef::from(connection.stream.inner());
        // Turned off by hand: only the read may turn it on again.
        socket.set_tcp_quickack(false).unwrap();
        let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); 16];
        let mut buffer = hyper::rt::ReadBuf::uninit(&mut storage);
        std::future::poll_fn(|cx| hyper::rt::Read::poll_read(Pin::new(&mut connection), cx, buffer.unfilled()))
            .await
            .unwrap();
        assert_eq!(buffer.filled(), b"hello");
        assert!(
            socket2::SockRef::from(connection.stream.inner())
                .tcp_quickack()
                .unwrap()
        );
    }

    #[test]
    fn keys_are_encoded_like_encode_uri_component() {
        assert_eq!(encode_component("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(encode_component("key-1_x.y"), "key-1_x.y");
    }

    #[test]
    fn invoke_paths_join_the_deployment_path() {
        assert_eq!(
            endpoint_url("http://h:9080/base/?x=1", "/invoke/S/h"),
            "http://h:9080/base/invoke/S/h?x=1"
        );
        assert_eq!(endpoint_url("http://h:9080", "/invoke/S/h"), "http://h:9080/invoke/S/h");
    }
}
