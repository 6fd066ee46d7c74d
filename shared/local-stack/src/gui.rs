//! The official Mender web GUI on the local server, when `MENDER_GUI_DIR` names a built GUI:
//! the `dist/` directory of mender-server's `frontend/` (`npm ci && npm run build`), or
//! `/var/www/mender-gui/dist` copied out of the `mendersoftware/gui` image.
//!
//! Served like upstream's `frontend/httpd.conf` (nginx in the GUI container):
//!
//! * `GET /ui/<path>`: the file `<dir>/<path>` (a precompressed `<path>.gz` when the client
//!   accepts gzip and the file is there, as the image ships them); anything that is not a file
//!   (unknown paths, directories, `/ui/` itself) is `<dir>/index.html` with status 200, the
//!   single page app's fallback (nginx: `try_files $uri $uri/index.html /index.html`).
//! * `GET /ui/env.js`: generated here ([`env_js`]), what the container's `entrypoint.sh` writes
//!   at start, with the open-source values. It always wins over an `env.js` in the directory.
//! * `GET /` and `GET /ui`: redirect to `/ui/` (temporary, so a browser does not remember it
//!   once the stack runs without the GUI).
//!
//! Every GUI response carries `Cache-Control: no-cache` (the bundles have fixed names, so the
//! browser must revalidate). The API routes are under `/api/`, so they never meet these routes;
//! without `MENDER_GUI_DIR` none of this is mounted and `/ui/...` is Mender's 404 JSON body.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

/// The setting (environment variable) naming the GUI directory.
pub const GUI_DIR_VAR: &str = "MENDER_GUI_DIR";

/// Where the GUI is served on the local server's origin.
pub const GUI_PATH: &str = "/ui/";

/// The Mender version the GUI is told about (`version`, and `integrationVersion` for GUI builds
/// older than mender-server 4.0): the newest mender-server release of the upstream mirror the
/// API was taken from. The GUI derives its docs.mender.io links from its first two parts.
pub const MENDER_VERSION: &str = "4.1.3";

/// A built GUI to serve.
#[derive(Clone, Debug)]
pub struct Gui {
    dir: PathBuf,
    env_js: Arc<str>,
}

impl Gui {
    /// The GUI in `dir`, which must hold `index.html`.
    pub fn new(dir: impl Into<PathBuf>) -> anyhow::Result<Gui> {
        let dir = dir.into();
        if !dir.join("index.html").is_file() {
            bail!(
                "{GUI_DIR_VAR}={}: no index.html there (point it at a built Mender GUI, \
                 e.g. frontend/dist of mender-server)",
                dir.display()
            );
        }
        Ok(Gui {
            dir,
            env_js: env_js(MENDER_VERSION).into(),
        })
    }

    /// The GUI named by the `MENDER_GUI_DIR` value, if set and not empty.
    pub fn from_setting(value: Option<String>) -> anyhow::Result<Option<Gui>> {
        match value.filter(|v| !v.is_empty()) {
            Some(dir) => Ok(Some(Gui::new(dir)?)),
            None => Ok(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `env.js` served at `/ui/env.js`.
    pub fn env_js(&self) -> &str {
        &self.env_js
    }

    /// The GUI's routes (no fallback: the caller's router keeps its own).
    pub fn router(&self) -> Router {
        let index = ServeFile::new(self.dir.join("index.html")).precompressed_gzip();
        let files = ServeDir::new(&self.dir)
            .append_index_html_on_directories(false)
            .precompressed_gzip()
            .fallback(index);
        let shared = Arc::new(Shared {
            files,
            env_js: self.env_js.clone(),
        });
        Router::new()
            .route("/", get(to_gui))
            .route("/ui", get(to_gui))
            .route("/ui/env.js", get(serve_env_js))
            .route("/ui/", get(serve_file))
            .route("/ui/{*path}", get(serve_file))
            .with_state(shared)
    }
}

/// `router` plus the GUI's routes when there is one.
pub fn mount(router: Router, gui: Option<&Gui>) -> Router {
    match gui {
        Some(gui) => router.merge(gui.router()),
        None => router,
    }
}

struct Shared {
    files: ServeDir<ServeFile>,
    env_js: Arc<str>,
}

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

async fn to_gui() -> Redirect {
    Redirect::temporary(GUI_PATH)
}

async fn serve_env_js(State(shared): State<Arc<Shared>>) -> Response {
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/javascript"),
            ),
            (CACHE_CONTROL, NO_CACHE),
        ],
        shared.env_js.to_string(),
    )
        .into_response()
}

/// `/ui/<path>` from the directory: the request's path loses its `/ui` prefix, then
/// [`ServeDir`] (which refuses `..`) answers, with `index.html` as its fallback.
async fn serve_file(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/ui").unwrap_or("/");
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    parts.uri = match Uri::try_from(path_and_query) {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let mut response = match shared
        .files
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    response.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
    response
}

/// The file upstream's GUI container writes at start (`frontend/entrypoint.sh` of
/// mender-server: `cat >/var/www/mender-gui/dist/env.js <<EOF ...`), with the values of an
/// open-source installation of this backend: no enterprise, hosted or multitenancy features,
/// no Sentry, tracker, reCAPTCHA or Stripe keys; deviceconnect (remote terminal, file transfer,
/// port forwarding), deviceconfig (device configuration) and release tags on, since the local
/// server serves them; monitor, audit logs, reporting and delta progress off, since it does not. Feature values
/// are strings, as upstream's are (the GUI parses them with `stringToBoolean`).
pub fn env_js(version: &str) -> String {
    let on = |on: bool| if on { "true" } else { "false" };
    format!(
        r#"  mender_environment = {{
    commit: "",
    sentry: {{
      isReduxEnabled: "",
      location: "",
      replaysSessionSampleRate: 0.1,
      tracesSampleRate: 1.0
    }},
    hostAddress: "",
    hostedAnnouncement: "",
    features: {{
      hasAiEnabled: "{ai}",
      hasAuditlogs: "{auditlogs}",
      hasDeviceConfig: "{deviceconfig}",
      hasDeviceConnect: "{deviceconnect}",
      hasDeviceFlags: "{flags}",
      hasDeltaProgress: "{delta}",
      hasFeedbackEnabled: "{feedback}",
      hasManifestsEnabled: "{manifests}",
      hasMonitor: "{monitor}",
      hasMCUEnabled: "{mcu}",
      hasMultitenancy: "{multitenancy}",
      hasReleaseTags: "{release_tags}",
      hasReporting: "{reporting}",
      isEnterprise: "{enterprise}"
    }},
    feedbackProbability: "0.3",
    trackerCode: "",
    recaptchaSiteKey: "",
    stripeAPIKey: "",
    version: "{version}",
    integrationVersion: "{version}",
    demoArtifactPort: "",
    disableOnboarding: ""
  }}
"#,
        ai = on(false),
        auditlogs = on(false),
        deviceconfig = on(true),
        deviceconnect = on(true),
        flags = on(false),
        delta = on(false),
        feedback = on(false),
        manifests = on(false),
        monitor = on(false),
        mcu = on(false),
        multitenancy = on(false),
        release_tags = on(true),
        reporting = on(false),
        enterprise = on(false),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::http::header::LOCATION;

    /// A directory with a fake GUI build: `index.html`, `assets/app.js`, and an `env.js` of its
    /// own that the generated one must override.
    struct FakeGui(PathBuf);

    impl FakeGui {
        fn new(name: &str) -> FakeGui {
            let dir = std::env::temp_dir().join(format!(
                "mender-local-gui-{name}-{}-{}",
                std::process::id(),
                uuid_like()
            ));
            std::fs::create_dir_all(dir.join("assets")).unwrap();
            std::fs::write(dir.join("index.html"), INDEX).unwrap();
            std::fs::write(dir.join("assets/app.js"), APP_JS).unwrap();
            std::fs::write(dir.join("env.js"), "mender_environment = { stale: true }").unwrap();
            FakeGui(dir)
        }
    }

    impl Drop for FakeGui {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn uuid_like() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    const INDEX: &str = "<!DOCTYPE html><html><body><div id=\"main\"></div>\
        <script src=\"/ui/env.js\"></script></body></html>";
    const APP_JS: &str = "console.log('mender gui');";

    /// The local server's composition ([`crate::finish_local`]) around a stand-in API route.
    fn app(gui: Option<&Gui>) -> Router {
        let api = Router::new().route(
            "/api/management/v1/useradm/settings",
            get(|| async { "api" }),
        );
        crate::finish_local(api, gui)
    }

    async fn get_path(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn gui_serves_files_from_the_directory() {
        let dir = FakeGui::new("files");
        let gui = Gui::new(&dir.0).unwrap();
        let app = app(Some(&gui));

        let (status, headers, body) = get_path(&app, "/ui/assets/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, APP_JS);
        assert!(headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert_eq!(headers[CACHE_CONTROL], "no-cache");

        let (status, _, body) = get_path(&app, "/ui/index.html").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, INDEX));

        // API routes keep priority and are untouched.
        let (status, _, body) = get_path(&app, "/api/management/v1/useradm/settings").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "api"));
    }

    #[tokio::test]
    async fn gui_falls_back_to_index_html() {
        let dir = FakeGui::new("fallback");
        let gui = Gui::new(&dir.0).unwrap();
        let app = app(Some(&gui));
        for path in [
            "/ui/",
            "/ui/devices",
            "/ui/devices/accepted?id=123",
            "/ui/assets",
            "/ui/assets/",
            "/ui/assets/missing.js",
            "/ui/../Cargo.toml",
        ] {
            let (status, headers, body) = get_path(&app, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(body, INDEX, "{path}");
            assert!(
                headers[CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html"),
                "{path}"
            );
        }
        for path in ["/", "/ui"] {
            let (status, headers, _) = get_path(&app, path).await;
            assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{path}");
            assert_eq!(headers[LOCATION], "/ui/", "{path}");
        }
        // Only the GUI's paths: elsewhere Mender's 404 as before.
        let (status, _, body) = get_path(&app, "/nothing-here").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""), "{body}");
    }

    #[tokio::test]
    async fn gui_env_js_is_generated_with_open_source_values() {
        let dir = FakeGui::new("env");
        let gui = Gui::new(&dir.0).unwrap();
        let app = app(Some(&gui));
        let (status, headers, body) = get_path(&app, "/ui/env.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "application/javascript");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        // Ours, not the directory's env.js.
        assert_eq!(body, gui.env_js());
        assert!(!body.contains("stale"));
        assert!(body.trim_start().starts_with("mender_environment = {"));
        for line in [
            "isEnterprise: \"false\"",
            "hasMultitenancy: \"false\"",
            "hasDeviceConnect: \"true\"",
            "hasDeviceConfig: \"true\"",
            "hasAuditlogs: \"false\"",
            "hasMonitor: \"false\"",
            "hasReporting: \"false\"",
            "hostedAnnouncement: \"\"",
            "stripeAPIKey: \"\"",
            "version: \"4.1.3\"",
            "integrationVersion: \"4.1.3\"",
        ] {
            assert!(body.contains(line), "{line} missing in\n{body}");
        }
        assert!(!body.contains("isHosted"));
        // Balanced braces: a complete object literal.
        assert_eq!(body.matches('{').count(), body.matches('}').count());
    }

    #[tokio::test]
    async fn no_gui_without_the_setting() {
        assert!(Gui::from_setting(None).unwrap().is_none());
        assert!(Gui::from_setting(Some(String::new())).unwrap().is_none());
        let app = app(None);
        for path in ["/ui/", "/ui/env.js", "/ui/assets/app.js", "/ui", "/"] {
            let (status, _, body) = get_path(&app, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"], "not found", "{path}");
        }
        let (status, _, _) = get_path(&app, "/api/management/v1/useradm/settings").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn gui_dir_without_index_html_is_refused() {
        let dir = FakeGui::new("noindex");
        std::fs::remove_file(dir.0.join("index.html")).unwrap();
        let err = Gui::from_setting(Some(dir.0.display().to_string())).unwrap_err();
        assert!(err.to_string().contains("MENDER_GUI_DIR"), "{err}");
    }
}
