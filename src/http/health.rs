//! `/health`, `/ready` and `/metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 while the process serves.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 once recovery has finished, 503 before.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.engine.get() {
        Some(_) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        None => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({ "status": "recovering" })),
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
