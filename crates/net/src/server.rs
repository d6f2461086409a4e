use std::io;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` (HTTP/1.1 and HTTP/2 cleartext, so gRPC works too) until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> io::Result<()> {
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on an accepted connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Fallback for a port that serves gRPC and HTTP: unknown gRPC services get the gRPC
/// status UNIMPLEMENTED, anything else a plain 404.
pub async fn grpc_aware_fallback(request: Request<Body>) -> Response {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        let status = tonic::Status::unimplemented(format!(
            "{} is not served by this node (the service is unknown or its role does not run here)",
            request.uri().path()
        ));
        let (parts, ()) = status.into_http::<()>().into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    (
        StatusCode::NOT_FOUND,
        format!("no route for {}\n", request.uri().path()),
    )
        .into_response()
}
