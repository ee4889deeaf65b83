//! The web dashboard (DESIGN §6a): static HTML, CSS and JavaScript embedded in the
//! binary and served by the REST server, so a JobManager needs nothing beside itself and
//! the browser fetches nothing from elsewhere.
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /index.html` | the page |
//! | `GET /web/<asset>` | one of [`ASSETS`], with its content type |
//!
//! The page reads the same Flink REST API every other client uses; it holds no state of
//! its own beyond the bearer token a user pastes (kept in the tab's `sessionStorage`).
//! These routes are served without a token even when `rest.auth.token` is set: they
//! carry no cluster data, and the page must load before it can ask for the token. Every
//! API call the page makes is checked as any other.
//!
//! An unknown asset is a 404 with Flink's `{"errors":[…]}`, like any unknown route. Each
//! answer carries a `Content-Security-Policy` that lets the page load and call only its
//! own origin, and `Cache-Control: no-cache`, so a browser revalidates after the binary
//! (and with it the assets) changed.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::flink;

/// The page.
pub const INDEX_HTML: &str = include_str!("web/index.html");

/// The assets under `/web/`: name, content type, content.
pub const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("web/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("web/favicon.svg"),
    ),
];

/// The page's content type.
pub const HTML: &str = "text/html; charset=utf-8";

/// Only the page's own origin, for scripts, styles, images and API calls alike.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// The dashboard's routes, without the token check (see the module docs); `S` is the
/// state type of the router they are merged into.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/web/{*asset}", get(asset))
}

/// The total size of the page and its assets, bytes (the dashboard's page weight).
pub fn page_weight() -> usize {
    INDEX_HTML.len() + ASSETS.iter().map(|(_, _, a)| a.len()).sum::<usize>()
}

fn static_answer(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    (headers, body).into_response()
}

async fn index() -> Response {
    static_answer(HTML, INDEX_HTML)
}

async fn asset(name: Result<Path<String>, PathRejection>) -> Response {
    let name = match name {
        Ok(Path(n)) => n,
        Err(e) => return error(e.status(), &e.body_text()),
    };
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => static_answer(content_type, body),
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "Not found: /web/{}",
                name.chars().take(128).collect::<String>()
            ),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(flink::errors(message))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_references_only_embedded_assets() {
        let mut referenced = Vec::new();
        for part in INDEX_HTML.split("\"/web/").skip(1) {
            let name = part.split('"').next().unwrap();
            referenced.push(name);
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html references /web/{name}, which is not embedded"
            );
        }
        assert!(referenced.contains(&"app.js") && referenced.contains(&"app.css"));
        // The SVG namespace is a name, not an address anything is loaded from.
        let pages = ASSETS.iter().map(|(n, _, b)| (*n, *b));
        for (name, body) in pages.chain([("index.html", INDEX_HTML)]) {
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
                "{name} must not load anything from elsewhere"
            );
        }
        assert!(page_weight() > INDEX_HTML.len());
    }
}
