//! The router on Lambda: conversions between `lambda_http`'s request and
//! response and the router's, and [`handle_lambda`] for `lambda_http::run`.
//!
//! `lambda_http` puts an API Gateway stage back into the URI path; routing
//! uses the raw path the event carried instead, so a request reaches the same
//! route locally and on Lambda. A stage that is part of the raw path (an HTTP
//! API's named stage) is removed by [`crate::ApiOptions::base_path`].

use std::convert::Infallible;

use baton_runtime::ports::Backend;
use bytes::Bytes;
use http::Uri;
use lambda_http::{Body, RequestExt};

use crate::api::Api;
use crate::handlers::handle;

/// A `lambda_http` request as the router takes it: the raw path, the query, the body's bytes.
pub fn request_from_lambda(request: lambda_http::Request) -> http::Request<Bytes> {
    let raw = request.raw_http_path().to_string();
    let (mut parts, body) = request.into_parts();
    if !raw.is_empty() {
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{raw}?{query}"),
            None => raw,
        };
        // A raw path that does not form a URI keeps the URI lambda_http built.
        if let Ok(uri) = path_and_query.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(data) => Bytes::from(data),
        // `Body` is non-exhaustive; no body is safer than a guessed one.
        _ => Bytes::new(),
    };
    http::Request::from_parts(parts, bytes)
}

/// The router's response as `lambda_http` sends it: JSON text, or bytes if not UTF-8.
pub fn response_to_lambda(response: http::Response<Bytes>) -> lambda_http::Response<Body> {
    response.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    })
}

/// Answers one API Gateway (or ALB) request; for `lambda_http::run(service_fn(...))`.
pub async fn handle_lambda<B: Backend>(
    api: &Api<B>,
    request: lambda_http::Request,
) -> Result<lambda_http::Response<Body>, Infallible> {
    let response = handle(api, request_from_lambda(request)).await;
    Ok(response_to_lambda(response))
}
