//! CORS, so a browser storefront on another origin can call the API.
//!
//! Only origins listed in `[http.cors] allowed_origins` get CORS headers (none by default):
//! - a preflight (`OPTIONS` with `Access-Control-Request-Method`) from one is answered `204`
//!   with the methods, the request headers the API reads (`Authorization`, `Content-Type`,
//!   `Idempotency-Key`) and a max-age, before routing or admission;
//! - its other requests are served as usual, and the answer names the origin and exposes the
//!   response headers a client reads (`Retry-After`, `Idempotent-Replayed`, `ETag`).
//!
//! Requests from any other origin are served without CORS headers (a browser then keeps the
//! answer from the page; server-to-server callers are unaffected).

use std::collections::HashSet;
use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::EitherBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpResponse;
use futures_util::future::LocalBoxFuture;

use crate::config::CorsSettings;

/// The methods the API answers.
const METHODS: &str = "GET, POST, PUT, DELETE";
/// The request headers the API reads.
const REQUEST_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key";
/// The response headers a browser client may read.
const EXPOSED_HEADERS: &str = "Retry-After, Idempotent-Replayed, ETag";

/// The CORS middleware, built from `[http.cors]`.
#[derive(Clone)]
pub struct Cors {
    origins: Rc<HashSet<String>>,
    max_age: HeaderValue,
}

impl Cors {
    /// The policy of `settings`.
    pub fn new(settings: &CorsSettings) -> Self {
        Self {
            origins: Rc::new(settings.allowed_origins.iter().cloned().collect()),
            max_age: HeaderValue::from(settings.max_age_seconds),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CorsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsService {
            service: Rc::new(service),
            cors: self.clone(),
        }))
    }
}

/// [`Cors`] around one service.
pub struct CorsService<S> {
    service: Rc<S>,
    cors: Cors,
}

impl<S, B> Service<ServiceRequest> for CorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .filter(|origin| origin.to_str().is_ok_and(|origin| self.cors.origins.contains(origin)))
            .cloned();
        let Some(origin) = origin else {
            let call = self.service.call(request);
            return Box::pin(async move { call.await.map(ServiceResponse::map_into_left_body) });
        };
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let response = HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, METHODS))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, REQUEST_HEADERS))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, self.cors.max_age.clone()))
                .insert_header((header::VARY, "Origin"))
                .finish();
            let (http_request, _) = request.into_parts();
            return Box::pin(ready(Ok(
                ServiceResponse::new(http_request, response).map_into_right_body()
            )));
        }
        let call = self.service.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
            Ok(response.map_into_left_body())
        })
    }
}
