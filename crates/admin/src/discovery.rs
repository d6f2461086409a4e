//! Discovery of a deployment: `GET <uri>/discover` with the manifest media types we read,
//! over HTTP/2 with prior knowledge (h2c) for `http://` URIs unless the deployment was
//! registered with `use_http_11`. The answer is checked (content type, JSON, the runtime's
//! manifest rules) before anything is registered.

use restate_types::error_chain;
use std::collections::BTreeMap;
use std::time::Duration;

use restate_types::manifest::{EndpointManifest, ManifestError, ManifestVersion, ProtocolMode};

/// Attempts for answers that may be transient (connection errors, 408/429/500/502/503/504).
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A manifest larger than this is refused (the body is read only this far).
const MAX_MANIFEST_BYTES: usize = 16 << 20;

/// Where and how to discover a deployment.
#[derive(Debug, Clone)]
pub struct DiscoveryRequest {
    pub uri: String,
    pub additional_headers: BTreeMap<String, String>,
    pub use_http_11: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http11,
    Http2,
}

/// A deployment's checked answer.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub manifest: EndpointManifest,
    pub manifest_version: ManifestVersion,
    pub protocol_mode: ProtocolMode,
    /// The `x-restate-server` header, e.g. `restate-sdk-typescript/1.17.2`.
    pub sdk_version: Option<String>,
    /// The HTTP version discovery used; invocations use the same.
    pub http_version: HttpVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("`{uri}` is not a deployment URI: {reason} (expected e.g. http://localhost:9080)")]
    BadUri { uri: String, reason: String },
    #[error(
        "cannot reach the deployment at {url}: {reason}{hint}",
        hint = if *use_http_11 { "" } else { " (discovery uses HTTP/2 without TLS; if the deployment speaks only HTTP/1.1, register it with use_http_11)" }
    )]
    Unreachable {
        url: String,
        reason: String,
        use_http_11: bool,
    },
    /// The body is not part of the message: it would let the admin API probe any address.
    #[error("the deployment at {url} answered {status} to discovery, not a Restate manifest")]
    Status { url: String, status: u16 },
    #[error("the manifest of {url} is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge { url: String },
    #[error(
        "the deployment at {url} answered with content type `{content_type}`, not a Restate endpoint manifest \
         (application/vnd.restate.endpointmanifest.v1..v4+json): is it a Restate SDK endpoint?"
    )]
    ContentType { url: String, content_type: String },
    #[error("the manifest of {url} is refused: {error}")]
    Manifest { url: String, error: ManifestError },
}

/// `<uri path>/discover`, keeping the URI's query; one slash between the parts.
pub fn endpoint_url(uri: &str, path: &str) -> Result<String, DiscoveryError> {
    let bad = |reason: &str| DiscoveryError::BadUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("it has no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("only http:// and https:// deployments are supported"));
    }
    let (without_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    if without_query.is_empty() || without_query.starts_with('/') {
        return Err(bad("it has no host"));
    }
    let mut url = format!(
        "{scheme}://{}/{}",
        without_query.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

fn client(request: &DiscoveryRequest) -> Result<reqwest::Client, DiscoveryError> {
    // Redirects are not followed: the registered URI is the one invocations will use, and a
    // redirect would let a registration reach an address nobody registered.
    let builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    let builder = match (request.use_http_11, request.uri.starts_with("http://")) {
        (true, _) => builder.http1_only(),
        (false, true) => builder.http2_prior_knowledge(),
        (false, false) => builder,
    };
    builder.build().map_err(|e| DiscoveryError::BadUri {
        uri: request.uri.clone(),
        reason: e.to_string(),
    })
}

fn retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Discovers the deployment and checks its manifest.
pub async fn discover(request: &DiscoveryRequest) -> Result<Discovered, DiscoveryError> {
    let (url, shown) = (
        endpoint_url(&request.uri, "discover")?,
        without_query(&endpoint_url(&request.uri, "discover")?),
    );
    let client = client(request)?;
    // A network or body error: the deployment may answer on the next attempt.
    let unreachable = |error: reqwest::Error| DiscoveryError::Unreachable {
        url: shown.clone(),
        reason: error_chain(&error.without_url()),
        use_http_11: request.use_http_11,
    };
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(RETRY_PAUSE * attempt).await;
        }
        let mut call = client
            .get(&url)
            .header(reqwest::header::ACCEPT, ManifestVersion::accept_header());
        for (name, value) in &request.additional_headers {
            call = call.header(name.as_str(), value.as_str());
        }
        let response = match call.send().await {
            Ok(response) => response,
            Err(error) => {
                last = Some(unreachable(error));
                continue;
            }
        };
        let status = response.status().as_u16();
        let http_version = match response.version() {
            reqwest::Version::HTTP_2 | reqwest::Version::HTTP_3 => HttpVersion::Http2,
            _ => HttpVersion::Http11,
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, sdk_version) = (header("content-type"), header("x-restate-server"));
        if !(200..300).contains(&status) {
            let error = DiscoveryError::Status {
                url: shown.clone(),
                status,
            };
            if retryable(status) {
                last = Some(error);
                continue;
            }
            return Err(error);
        }
        let mut response = response;
        let mut body = Vec::new();
        let mut broken = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_MANIFEST_BYTES => {
                    return Err(DiscoveryError::TooLarge { url: shown });
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) => {
                    broken = Some(unreachable(error));
                    break;
                }
            }
        }
        if let Some(error) = broken {
            last = Some(error);
            continue;
        }
        let content_type = content_type.unwrap_or_default();
        let manifest_version =
            ManifestVersion::from_content_type(&content_type).ok_or_else(|| DiscoveryError::ContentType {
                url: shown.clone(),
                content_type: content_type.clone(),
            })?;
        let refused = |error| DiscoveryError::Manifest {
            url: shown.clone(),
            error,
        };
        let manifest = EndpointManifest::from_json(&body).map_err(refused)?;
        let protocol_mode = manifest.validate().map_err(refused)?;
        return Ok(Discovered {
            manifest,
            manifest_version,
            protocol_mode,
            sdk_version,
            http_version,
        });
    }
    Err(last.unwrap_or_else(|| DiscoveryError::Unreachable {
        url: shown,
        reason: "no attempt was made".into(),
        use_http_11: request.use_http_11,
    }))
}

/// A URL as errors show it: its query may hold a credential, so it is left out.
fn without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((before, _)) => format!("{before}?…"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deployment address that redirects elsewhere (to a cloud metadata address, say) is not
    /// followed, and nothing it answered is repeated in the error, nor the URI's query.
    #[tokio::test]
    async fn redirects_are_not_followed_and_answers_not_echoed() {
        use axum::http::{StatusCode, header};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let redirect = || async {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
                "secret body",
            )
        };
        let app = axum::Router::new().route("/discover", axum::routing::get(redirect));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let request = DiscoveryRequest {
            uri: format!("http://{address}/?token=abc"),
            additional_headers: BTreeMap::new(),
            use_http_11: true,
        };
        let error = discover(&request).await.unwrap_err().to_string();
        assert!(error.contains("answered 307"), "{error}");
        assert!(!error.contains("secret body"), "{error}");
        assert!(!error.contains("token=abc"), "{error}");
    }

    #[test]
    fn discover_urls_join_the_path_and_keep_the_query() {
        assert_eq!(
            endpoint_url("http://localhost:9080", "discover").unwrap(),
            "http://localhost:9080/discover"
        );
        assert_eq!(
            endpoint_url("http://host:9080/base/?token=x", "/discover").unwrap(),
            "http://host:9080/base/discover?token=x"
        );
        for bad in ["localhost:9080", "ftp://host", "http://", "http:///x"] {
            let error = endpoint_url(bad, "discover").unwrap_err();
            assert!(error.to_string().contains("not a deployment URI"), "{bad}: {error}");
        }
    }
}

/// Discovery against the real TypeScript SDK (`examples/typescript`, installed by
/// `scripts/deps.sh test`), and the refusals a user meets with wrong URIs.
#[cfg(test)]
mod sdk_tests {
    use restate_test_servers::{SdkService, free_port};
    use restate_types::manifest::ServiceType;

    use super::*;

    /// The Python SDK declares its protocol mode from the HTTP version of discovery itself.
    #[tokio::test]
    async fn discovers_the_python_sdk_over_h2c_and_http_11() {
        let service = SdkService::python();
        let h2c = discover(&request(&service.uri, false)).await.unwrap();
        assert_eq!(
            (h2c.protocol_mode, h2c.http_version),
            (ProtocolMode::BidiStream, HttpVersion::Http2)
        );
        assert_eq!(h2c.sdk_version.as_deref(), Some("restate-sdk-python/1.2.0"));
        let http_11 = discover(&request(&service.uri, true)).await.unwrap();
        assert_eq!(
            (http_11.protocol_mode, http_11.http_version),
            (ProtocolMode::RequestResponse, HttpVersion::Http11)
        );
        let names: Vec<&str> = http_11.manifest.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["Greeter", "Counter"]);
    }

    fn request(uri: &str, use_http_11: bool) -> DiscoveryRequest {
        DiscoveryRequest {
            uri: uri.to_owned(),
            additional_headers: BTreeMap::new(),
            use_http_11,
        }
    }

    #[tokio::test]
    async fn discovers_the_typescript_sdk_over_h2c() {
        let service = SdkService::typescript();
        let discovered = discover(&request(&service.uri, false)).await.unwrap();
        assert_eq!(discovered.manifest_version, ManifestVersion::V4);
        assert_eq!(discovered.protocol_mode, ProtocolMode::BidiStream);
        assert_eq!(discovered.http_version, HttpVersion::Http2);
        assert_eq!(discovered.sdk_version.as_deref(), Some("restate-sdk-typescript/1.17.2"));
        assert_eq!(
            (
                discovered.manifest.min_protocol_version,
                discovered.manifest.max_protocol_version
            ),
            (5, 7)
        );
        let services: Vec<(&str, ServiceType)> = discovered
            .manifest
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.ty))
            .collect();
        assert_eq!(
            services,
            vec![
                ("Greeter", ServiceType::Service),
                ("Counter", ServiceType::VirtualObject)
            ]
        );
    }

    #[tokio::test]
    async fn wrong_uris_are_refused_with_the_reason() {
        let service = SdkService::typescript();
        // HTTP/1.1 to an h2c-only endpoint.
        let error = discover(&request(&service.uri, true)).await.unwrap_err();
        assert!(matches!(error, DiscoveryError::Unreachable { .. }), "{error}");
        // A web server that is not a Restate endpoint.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let web = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
            }
        });
        let error = discover(&request(&web, true)).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`text/html`, not a Restate endpoint manifest"),
            "{error}"
        );
        server.abort();
        // Nothing listening.
        let nowhere = format!("http://127.0.0.1:{}", free_port());
        let error = discover(&request(&nowhere, false)).await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains("cannot reach") && text.contains("use_http_11"), "{text}");
    }
}
