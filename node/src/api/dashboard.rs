//! The coordinators' dashboard, served by the node itself at `/`: one HTML
//! page, a script and a style sheet, embedded in the binary (about 20 KB,
//! no build step, nothing fetched from elsewhere). It reads
//! `/v1/network/state` and redraws on `/v1/events`. French by default;
//! English, and Dutch and Arabic (right to left) started: `?lang=`.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /assets/{file}`.
pub async fn assets(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => asset("text/javascript; charset=utf-8", APP),
        "style.css" => asset("text/css; charset=utf-8", STYLE),
        _ => super::error::ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no asset {file:?}"))
            .into_response(),
    }
}
