//! HTTP clients for deployments: HTTP/2 with prior knowledge (h2c) for `http://` deployments,
//! HTTP/1.1 for those registered with `use_http_11`. Connections are pooled per address and
//! HTTP/2 streams multiplexed, so concurrent invocations share few connections.

use std::time::Duration;

/// HTTP/2 flow-control windows towards deployments: how much a deployment may send ahead of
/// what the invoker has read, per connection and per invocation.
const H2_CONNECTION_WINDOW: u32 = 64 << 20;
const H2_STREAM_WINDOW: u32 = 2 << 20;

/// The two clients; cheap to clone.
#[derive(Clone)]
pub struct InvokerClient {
    pub(crate) h2: reqwest::Client,
    pub(crate) h1: reqwest::Client,
}

impl InvokerClient {
    pub fn new(connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            // Fixed, large windows: every concurrent invocation of a deployment shares one
            // connection, and the SDKs send each message as its own small DATA frame. The
            // HTTP/2 client closes a connection whose unread small frames exceed half its
            // connection window ("too_many_data_frames"), failing every attempt on it; with
            // the 64 KiB default that took a thousand busy invocations a few frames each.
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(40))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .pool_idle_timeout(Duration::from_secs(300))
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()?;
        let h1 = reqwest::Client::builder()
            .http1_only()
            .pool_idle_timeout(Duration::from_secs(300))
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { h2, h1 })
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
