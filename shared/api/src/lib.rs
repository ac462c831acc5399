//! Baton's HTTP API, independent of the backend and of how requests arrive.
//!
//! [`handle`] turns one `http::Request<Bytes>` into one `http::Response<Bytes>`
//! over any [`Backend`](baton_runtime::ports::Backend); the same router answers
//!
//! - locally, through [`serve`] (plain HTTP/1 with hyper, for `baton dev`), or
//!   through [`handle`] from another server (`baton ui` mounts it under `/api`),
//!   and
//! - on Lambda behind API Gateway, through [`lambda`] (feature `lambda`).
//!
//! Modules:
//!
//! - [`api`]: [`Api`], its options and the execution id generator;
//! - [`error`]: [`ApiError`], every way a request can fail and its status code;
//! - [`routes`]: which path and method reach which handler, and [`ROUTES`],
//!   the list of every route;
//! - [`handlers`]: what each route does, through the coordinator and backend,
//!   and [`OPENAPI_JSON`], the document of every route (`openapi.json` beside
//!   `src/`, served at `GET /openapi.json`);
//! - [`views`]: the JSON bodies the API returns;
//! - [`server`]: the local hyper server;
//! - [`lambda`]: conversions to and from `lambda_http`.

pub mod api;
pub mod error;
pub mod handlers;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod routes;
pub mod server;
pub mod views;

pub use api::{Api, ApiOptions, IdGenerator, TimeCounterIds};
pub use error::ApiError;
pub use handlers::{OPENAPI_JSON, handle};
pub use routes::{ROUTES, RouteSpec};
pub use server::{ServeError, serve, serve_on};
