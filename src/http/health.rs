//! `/health`, `/ready` and `/metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// `GET /health`: 200 while the process serves.
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health_health", responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 200, description = "The process serves", body = crate::http::openapi::Status)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    // With Kafka on, what an operator needs at a glance: the backlog, whether it is over its
    // alert, and how many events went to the dead-letter topic.
    let kafka = state.engine.get().and_then(|engine| engine.kafka_status.as_ref());
    match kafka {
        None => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Some(kafka) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "kafka": {
                "backlog_events": kafka.backlog_events(),
                "backlog_alert": kafka.backlog_alert(),
                "dead_lettered_events": kafka.dead_lettered_events(),
            },
        })),
    }
}

/// `GET /ready`: 200 once recovery has finished, 503 before.
#[utoipa::path(get, path = "/ready", tag = "operations", operation_id = "health_ready", responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 200, description = "Recovered and serving", body = crate::http::openapi::Status), (status = 503, description = "Still recovering", body = crate::http::openapi::Status)))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match state.engine.get() {
        Some(_) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        None => HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(json!({ "status": "recovering" })),
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "health_metrics", responses((status = 401, description = "A token that is not valid (none is needed; a wrong one is never ignored)", body = crate::http::openapi::ErrorBody), (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
