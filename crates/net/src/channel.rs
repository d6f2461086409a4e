use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
#[error("invalid node address `{address}`: {reason}; expected a URL such as http://127.0.0.1:5122/")]
pub struct ChannelError {
    pub address: String,
    pub reason: String,
}

/// Accepts `host:port`, `http://host:port` and `http://host:port/`.
pub fn normalize_address(address: &str) -> String {
    let trimmed = address.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    if with_scheme.ends_with('/') {
        with_scheme
    } else {
        format!("{with_scheme}/")
    }
}

/// A lazily connecting gRPC channel to a node's fabric port.
pub fn channel(address: &str, connect_timeout: Duration, request_timeout: Duration) -> Result<Channel, ChannelError> {
    Ok(endpoint(address, connect_timeout)?
        .timeout(request_timeout)
        .connect_lazy())
}

/// A lazily connecting channel whose requests have no deadline of their own: for requests that
/// wait as long as what they ask for takes (a call waits for its invocation's result), where
/// the caller bounds the wait if it wants one. Keep-alives still detect a dead peer.
pub fn channel_without_deadline(address: &str, connect_timeout: Duration) -> Result<Channel, ChannelError> {
    Ok(endpoint(address, connect_timeout)?.connect_lazy())
}

fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, ChannelError> {
    let url = normalize_address(address);
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| ChannelError {
        address: address.to_owned(),
        reason: e.to_string(),
    })?;
    if endpoint.uri().host().is_none() {
        return Err(ChannelError {
            address: address.to_owned(),
            reason: "the host is missing".into(),
        });
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}
