//! The admin page: plain HTML, CSS and JavaScript compiled into the binary,
//! no build step. It reads and writes through the `/v1` API with the token
//! the person enters.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::state::AppState;

/// The page.
pub const ADMIN_HTML: &str = include_str!("../assets/admin.html");
/// Its stylesheet.
pub const ADMIN_CSS: &str = include_str!("../assets/admin.css");
/// Its script.
pub const ADMIN_JS: &str = include_str!("../assets/admin.js");

/// Only the page's own files and API: no inline script, no other origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The admin routes (open: the files hold no data).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/admin") }))
        .route("/admin", get(|| async { asset(ADMIN_HTML, "text/html; charset=utf-8") }))
        .route("/admin/admin.css", get(|| async { asset(ADMIN_CSS, "text/css; charset=utf-8") }))
        .route("/admin/admin.js", get(|| async { asset(ADMIN_JS, "text/javascript; charset=utf-8") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
