//! The local server: the router over plain HTTP/1 with hyper, for
//! `baton dev` and `baton serve`. It has no authentication, so it is meant
//! for loopback addresses.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_runtime::ports::Backend;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::error::ApiError;
use crate::handlers::{finish, handle};

/// How long in-flight requests may take to finish once shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause after a failed accept (such as running out of file descriptors),
/// so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves the API on `addr` until `shutdown` completes, then lets in-flight
/// requests finish (for at most 10 seconds).
pub async fn serve<B: Backend + 'static>(
    api: Arc<Api<B>>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_on(api, listener, shutdown).await
}

/// Like [`serve`], on a listener already bound (port 0 picks a free port;
/// read it from the listener first).
pub async fn serve_on<B: Backend + 'static>(
    api: Arc<Api<B>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Ok(local) = listener.local_addr() {
        info!(http.address = %local, "serving the Baton API");
        if !local.ip().is_loopback() {
            warn!(http.address = %local, "the API has no authentication and listens beyond loopback");
        }
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let api = api.clone();
                    let service = service_fn(move |request| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(respond(&api, request).await) }
                    });
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            debug!(client.address = %peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => info!("API server stopped"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "API server stopped with requests still in flight");
        }
    }
    Ok(())
}

/// Reads the body (refusing one over the limit without reading it all), then routes.
async fn respond<B: Backend>(api: &Api<B>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let limit = api.options().body_limit;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let refuse = |error: ApiError| {
        finish(&parts.method, parts.uri.path(), None, started, Err(error)).map(Full::new)
    };
    if let Some(size) = declared.filter(|&size| size > limit) {
        return refuse(ApiError::BodyTooLarge {
            size: Some(size),
            limit,
        });
    }
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return refuse(ApiError::BodyTooLarge { size: None, limit });
        }
        Err(e) => {
            return refuse(ApiError::BadRequest(format!(
                "the request body could not be read: {e}"
            )));
        }
    };
    handle(api, Request::from_parts(parts, body))
        .await
        .map(Full::new)
}
