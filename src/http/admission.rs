//! Admission: what is refused before a handler runs, so an overload sheds work instead of
//! queueing it. A connection beyond `http.max_connections` is answered `503` and closed; a
//! write while the writer is behind `writer.max_queue_delay_ms` is answered `503` at once.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use super::AppState;

/// Open connections, against `http.max_connections`. Each connection holds an `OpenConnection`
/// in its extensions, which counts it until the connection is dropped.
#[derive(Clone)]
pub struct ConnectionCount {
    open: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

/// Counts one open connection while it lives.
struct OpenConnection(Arc<std::sync::atomic::AtomicUsize>);

/// Marks a connection opened beyond the limit: its requests get 503 and it is closed.
struct OverLimit;

impl ConnectionCount {
    /// A count of none open, against `max`.
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    /// Counts a connection that just opened; marks it when it is over the limit.
    pub fn open(&self, extensions: &mut actix_web::dev::Extensions) {
        use std::sync::atomic::Ordering;
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN).increment(1.0);
        extensions.insert(OpenConnection(Arc::clone(&self.open)));
        if open > self.max {
            extensions.insert(OverLimit);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Whether writes are being shed: the writer's queueing delay is over
/// `writer.max_queue_delay_ms`, so a new write would wait longer than that before its turn.
fn shedding(request: &actix_web::dev::ServiceRequest) -> bool {
    let Some(state) = request.app_data::<web::Data<AppState>>() else {
        return false;
    };
    let Some(engine) = state.engine.get() else {
        return false;
    };
    engine.writer.queue_delay() > Duration::from_millis(state.settings.writer.max_queue_delay_ms)
}

/// A response whose body is the service's (left) or a refusal's (right).
type EitherResponse<B> = actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>;

/// The future of [`admit`]: a ready refusal, or the service's answer.
type Refusing<F, B> = futures_util::future::Either<
    std::future::Ready<Result<EitherResponse<B>, actix_web::Error>>,
    futures_util::future::MapOk<F, fn(actix_web::dev::ServiceResponse<B>) -> EitherResponse<B>>,
>;

/// Admission: a write while the writer is behind (`writer.max_queue_delay_ms`) gets
/// `503 overloaded` at once, so an overload sheds work instead of queueing it; every request
/// of a connection beyond `http.max_connections` gets `503 overloaded` and the connection is
/// closed. Both with `Retry-After`, so clients learn why instead of hanging.
pub fn admit<S, B>(request: actix_web::dev::ServiceRequest, service: &S) -> Refusing<S::Future, B>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    use futures_util::TryFutureExt;
    // 503 overloaded, at once; `close` also ends the connection.
    let refuse = |request: actix_web::dev::ServiceRequest, close: bool| {
        let mut response = actix_web::ResponseError::error_response(&crate::http::error::ApiError::Overloaded);
        if close {
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        let (http_request, _) = request.into_parts();
        let refused = actix_web::dev::ServiceResponse::new(http_request, response).map_into_right_body();
        futures_util::future::Either::Left(std::future::ready(Ok(refused)))
    };
    if request.request().conn_data::<OverLimit>().is_some() {
        metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
        return refuse(request, true);
    }
    if request.method() != actix_web::http::Method::GET && shedding(&request) {
        metrics::counter!(crate::metrics::OVERLOAD_REFUSALS_TOTAL, "queue" => "writer_delay").increment(1);
        return refuse(request, false);
    }
    let left: fn(
        actix_web::dev::ServiceResponse<B>,
    ) -> actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>> =
        actix_web::dev::ServiceResponse::map_into_left_body;
    futures_util::future::Either::Right(service.call(request).map_ok(left))
}
