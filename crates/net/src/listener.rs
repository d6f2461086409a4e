use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener that could not be bound, with the config key that chose its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (config key `{config_key}`): {reason}")]
pub struct BindError {
    pub address: SocketAddr,
    pub config_key: &'static str,
    pub reason: String,
}

/// Binds a listener; done for every listener before any role starts, so a port conflict
/// fails the start at once and names the key to change.
pub async fn bind(address: SocketAddr, config_key: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(address).await.map_err(|error| BindError {
        address,
        config_key,
        reason: explain(&error, address, config_key),
    })
}

fn explain(error: &io::Error, address: SocketAddr, config_key: &str) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "port {} is already in use by another process; stop it or set `{config_key}` to a free port",
            address.port()
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!(
                "{} is not an address of this machine; use one of its addresses or 0.0.0.0",
                address.ip()
            )
        }
        io::ErrorKind::PermissionDenied => {
            format!(
                "permission denied for port {}; ports below 1024 need privileges",
                address.port()
            )
        }
        _ => error.to_string(),
    }
}
