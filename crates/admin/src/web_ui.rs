//! The Restate web UI on the admin port (`/ui/`), served from a release the operator supplies
//! (`[admin] web-ui-dir`, a directory or its `.zip`): this build bundles none. The routes follow
//! the reference server's: `/` and `/ui` redirect to `/ui/` (query kept), a file of the release
//! is served with its MIME type, any other `/ui/*` path answers `index.html` (the single-page
//! app routes it), and every answer allows a service worker at `/`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the UI comes from.
#[derive(Debug, Clone)]
pub enum WebUi {
    /// `[admin] disable-web-ui`: no `/ui/` routes.
    Disabled,
    /// No release configured: `/ui/` says how to get one.
    NotConfigured,
    /// The directory holding `index.html` and the assets.
    Files(PathBuf),
}

impl WebUi {
    /// The UI of `options`; a `.zip` is unpacked into `unpack_dir` (replaced at every start).
    pub fn prepare(options: &restate_config::AdminOptions, unpack_dir: &Path) -> Result<Self, String> {
        if options.disable_web_ui {
            return Ok(Self::Disabled);
        }
        let Some(source) = &options.web_ui_dir else {
            return Ok(Self::NotConfigured);
        };
        if source.is_dir() {
            return Ok(Self::Files(source.clone()));
        }
        unpack(source, unpack_dir)
            .map(Self::Files)
            .map_err(|reason| format!("`[admin] web-ui-dir` {}: {reason}", source.display()))
    }
}

/// Unpacks `zip` into `into` and returns the directory holding `index.html` (the top, or the
/// one folder a release may wrap its files in).
fn unpack(zip: &Path, into: &Path) -> Result<PathBuf, String> {
    let file = std::fs::File::open(zip).map_err(|e| format!("cannot be opened: {e}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("is not a readable zip archive: {e}"))?;
    let staging = into.with_extension("unpacking");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| format!("entry {index} cannot be read: {e}"))?;
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| format!("#{index}"));
        // Names that would leave the directory (`../x`, absolute paths) are refused.
        let Some(relative) = entry.enclosed_name() else {
            return Err(format!("entry `{name}` points outside the archive"));
        };
        let target = staging.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("entry `{name}` cannot be unpacked: {e}"))?;
        std::fs::write(&target, bytes).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    let _ = std::fs::remove_dir_all(into);
    std::fs::rename(&staging, into)
        .map_err(|e| format!("cannot move the unpacked files to {}: {e}", into.display()))?;
    if into.join("index.html").is_file() {
        return Ok(into.to_path_buf());
    }
    match restate_config::web_ui_folders(into).as_slice() {
        [one] => Ok(one.clone()),
        _ => Err("holds no index.html: it is not a web UI release".into()),
    }
}

/// The `/`, `/ui` and `/ui/*` routes of `ui`.
pub fn router(ui: WebUi) -> Router {
    let root = match ui {
        WebUi::Disabled => {
            let disabled = || async {
                (
                    StatusCode::NOT_FOUND,
                    "the web UI is disabled on this node (`[admin] disable-web-ui = true`)",
                )
            };
            return Router::new()
                .route("/ui", get(disabled))
                .route("/ui/", get(disabled))
                .route("/ui/{*path}", get(disabled));
        }
        WebUi::NotConfigured => None,
        WebUi::Files(dir) => Some(dir),
    };
    Router::new()
        .route("/", get(to_ui))
        .route("/ui", get(to_ui))
        .route("/ui/", get(serve_index))
        .route("/ui/{*path}", get(serve_path))
        .with_state(root)
        .layer(axum::middleware::map_response(allow_service_worker))
}

async fn allow_service_worker(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("service-worker-allowed", HeaderValue::from_static("/"));
    response
}

async fn to_ui(RawQuery(query): RawQuery) -> Redirect {
    match query {
        Some(query) if !query.is_empty() => Redirect::permanent(&format!("/ui/?{query}")),
        _ => Redirect::permanent("/ui/"),
    }
}

async fn serve_index(State(root): State<Option<PathBuf>>) -> Response {
    match root {
        Some(root) => index(&root).await,
        None => not_configured(),
    }
}

async fn serve_path(State(root): State<Option<PathBuf>>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(root) = root else {
        return not_configured();
    };
    if let Some(file) = file_under(&root, &path)
        && let Ok(bytes) = tokio::fs::read(&file).await
    {
        let mime = mime_guess::from_path(&file).first_or_octet_stream();
        return ([(header::CONTENT_TYPE, mime.as_ref().to_owned())], bytes).into_response();
    }
    // A route of the single-page app (`/ui/invocations/inv_…`): the app resolves it.
    index(&root).await
}

/// The file `path` names under `root`, if it names one (no `..`, no absolute paths).
fn file_under(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path);
    if !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    let file = root.join(relative);
    file.is_file().then_some(file)
}

async fn index(root: &Path) -> Response {
    match tokio::fs::read(root.join("index.html")).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the web UI's index.html under {} cannot be read: {error}",
                root.display()
            ),
        )
            .into_response(),
    }
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(
            "<!doctype html><html><head><title>Restate web UI</title></head><body>\
             <h1>No web UI is configured on this node</h1>\
             <p>restate-rs does not bundle the Restate web UI. Download a release \
             (<code>ui-vX.Y.Z.zip</code> from \
             <a href=\"https://github.com/restatedev/restate-web-ui/releases\">github.com/restatedev/restate-web-ui/releases</a>), \
             then point the admin role at it and restart the node:</p>\
             <pre>[admin]\nweb-ui-dir = \"/path/to/ui-vX.Y.Z.zip\"   # or the unpacked directory</pre>\
             <p>or set <code>RESTATE_ADMIN__WEB_UI_DIR</code>. The admin API itself is served on this port.</p>\
             </body></html>",
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn release(dir: &Path) {
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>app</html>").unwrap();
        std::fs::write(dir.join("assets/app-1.js"), "console.log(1)").unwrap();
        std::fs::write(dir.join("assets/font.woff2"), [0u8, 1, 2]).unwrap();
    }

    #[tokio::test]
    async fn files_are_served_with_their_type_and_app_routes_answer_the_index() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path());
        let router = router(WebUi::Files(dir.path().to_path_buf()));
        let (status, headers, body) = get(&router, "/ui/assets/app-1.js").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript");
        assert_eq!(headers["service-worker-allowed"], "/");
        let (_, headers, _) = get(&router, "/ui/assets/font.woff2").await;
        assert_eq!(headers[header::CONTENT_TYPE], "font/woff2");
        for route in ["/ui/", "/ui/invocations/inv_1abc", "/ui/assets/missing.js"] {
            let (status, headers, body) = get(&router, route).await;
            assert_eq!((status, body.as_str()), (StatusCode::OK, "<html>app</html>"), "{route}");
            assert_eq!(headers["service-worker-allowed"], "/");
        }
        // Nothing outside the release is reachable.
        std::fs::write(dir.path().join("../secret.txt"), "no").ok();
        let (_, _, body) = get(&router, "/ui/../secret.txt").await;
        assert_ne!(body, "no");
        let (_, _, body) = get(&router, "/ui/%2e%2e/secret.txt").await;
        assert_ne!(body, "no");
    }

    #[tokio::test]
    async fn the_root_and_ui_redirect_to_ui_slash_keeping_the_query() {
        let dir = tempfile::tempdir().unwrap();
        release(dir.path());
        let router = router(WebUi::Files(dir.path().to_path_buf()));
        let (status, headers, _) = get(&router, "/?a=1").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/ui/?a=1");
        let (_, headers, _) = get(&router, "/ui").await;
        assert_eq!(headers[header::LOCATION], "/ui/");
    }

    #[tokio::test]
    async fn without_a_release_the_ui_says_how_to_get_one_and_disabled_serves_nothing() {
        let router = router(WebUi::NotConfigured);
        let (status, _, body) = get(&router, "/ui/overview").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("web-ui-dir"), "{body}");
        let disabled = super::router(WebUi::Disabled);
        let (status, _, _) = get(&disabled, "/ui/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_zip_release_is_unpacked_also_from_a_wrapping_folder_and_bad_ones_are_named() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("ui-v1.0.0.zip");
        let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("ui-v1.0.0/index.html", options).unwrap();
        writer.write_all(b"<html>zipped</html>").unwrap();
        writer.start_file("ui-v1.0.0/assets/a.js", options).unwrap();
        writer.write_all(b"1").unwrap();
        writer.finish().unwrap();
        let options = restate_config::AdminOptions {
            web_ui_dir: Some(zip_path.clone()),
            ..Default::default()
        };
        let into = dir.path().join("web-ui");
        let WebUi::Files(root) = WebUi::prepare(&options, &into).unwrap() else {
            panic!("a zip release gives files")
        };
        assert_eq!(
            std::fs::read_to_string(root.join("index.html")).unwrap(),
            "<html>zipped</html>"
        );
        // Unpacked again at the next start, over the old files.
        assert!(WebUi::prepare(&options, &into).is_ok());

        std::fs::write(&zip_path, b"not a zip").unwrap();
        let error = WebUi::prepare(&options, &into).unwrap_err();
        assert!(
            error.contains("web-ui-dir") && error.contains("not a readable zip"),
            "{error}"
        );
    }
}
