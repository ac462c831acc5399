//! Routing: which path and method reach which handler.
//!
//! [`ROUTES`] is the one list of what the API serves: the router matches
//! requests against it, and the OpenAPI document's test checks the document
//! against it, so a route cannot be served without being documented.
//!
//! Routes go by the raw request path (minus a configured base path such as
//! an API Gateway stage), so the same table serves `baton dev` locally and
//! API Gateway on Lambda, whose own path parameters are not needed.

use std::vec::IntoIter;

use http::Method;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /workflows`
    ListWorkflows,
    /// `GET /workflows/{name}`
    GetWorkflow { name: String },
    /// `PUT /workflows/{name}`
    PutWorkflow { name: String },
    /// `POST /workflows/{name}/executions`
    StartExecution { workflow: String },
    /// `GET /executions`
    ListExecutions,
    /// `GET /executions/{id}`
    GetExecution { id: String },
    /// `GET /executions/{id}/history`
    History { id: String },
    /// `POST /executions/{id}/cancel`
    Cancel { id: String },
    /// `POST /executions/{id}/redrive`
    Redrive { id: String },
    /// `POST /executions/{id}/signals/{name}`
    Signal { id: String, name: String },
    /// `POST /events`
    PostEvent,
    /// `GET /openapi.json`
    OpenApi,
}

impl Route {
    /// The execution a route concerns, for logs.
    pub fn execution_id(&self) -> Option<&str> {
        match self {
            Route::GetExecution { id }
            | Route::History { id }
            | Route::Cancel { id }
            | Route::Redrive { id }
            | Route::Signal { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// One entry of [`ROUTES`]: a method, a path template whose `{param}`
/// segments each match one non-empty segment, and how the matched
/// parameters (in path order) make the [`Route`].
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    build: fn(&mut IntoIter<String>) -> Option<Route>,
}

/// Every route the API serves, in the order `Allow` lists methods.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "GET",
        path: "/workflows",
        build: |_| Some(Route::ListWorkflows),
    },
    RouteSpec {
        method: "GET",
        path: "/workflows/{name}",
        build: |p| Some(Route::GetWorkflow { name: p.next()? }),
    },
    RouteSpec {
        method: "PUT",
        path: "/workflows/{name}",
        build: |p| Some(Route::PutWorkflow { name: p.next()? }),
    },
    RouteSpec {
        method: "POST",
        path: "/workflows/{name}/executions",
        build: |p| {
            Some(Route::StartExecution {
                workflow: p.next()?,
            })
        },
    },
    RouteSpec {
        method: "GET",
        path: "/executions",
        build: |_| Some(Route::ListExecutions),
    },
    RouteSpec {
        method: "GET",
        path: "/executions/{id}",
        build: |p| Some(Route::GetExecution { id: p.next()? }),
    },
    RouteSpec {
        method: "GET",
        path: "/executions/{id}/history",
        build: |p| Some(Route::History { id: p.next()? }),
    },
    RouteSpec {
        method: "POST",
        path: "/executions/{id}/cancel",
        build: |p| Some(Route::Cancel { id: p.next()? }),
    },
    RouteSpec {
        method: "POST",
        path: "/executions/{id}/redrive",
        build: |p| Some(Route::Redrive { id: p.next()? }),
    },
    RouteSpec {
        method: "POST",
        path: "/executions/{id}/signals/{name}",
        build: |p| {
            Some(Route::Signal {
                id: p.next()?,
                name: p.next()?,
            })
        },
    },
    RouteSpec {
        method: "POST",
        path: "/events",
        build: |_| Some(Route::PostEvent),
    },
    RouteSpec {
        method: "GET",
        path: "/openapi.json",
        build: |_| Some(Route::OpenApi),
    },
];

impl RouteSpec {
    /// The parameters of `segments` (decoded) if they fit this path template.
    fn matches(&self, segments: &[String]) -> Option<Vec<String>> {
        let template: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        if template.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (part, segment) in template.iter().zip(segments) {
            if part.starts_with('{') && part.ends_with('}') {
                if segment.is_empty() {
                    return None;
                }
                params.push(segment.clone());
            } else if part != segment {
                return None;
            }
        }
        Some(params)
    }
}

/// Finds the route of a request: 404 when no path matches, 405 when the
/// path matches but not with this method.
pub fn resolve(method: &Method, path: &str, base_path: Option<&str>) -> Result<Route, ApiError> {
    let not_found = || ApiError::NoRoute {
        method: method.clone(),
        path: path.to_string(),
    };
    let relative = strip_base(path, base_path);
    let relative = relative.strip_prefix('/').ok_or_else(not_found)?;
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    let segments = relative
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect::<Result<Vec<String>, String>>()
        .map_err(|e| ApiError::BadRequest(format!("the path {path} {e}")))?;
    let mut allowed: Vec<Method> = Vec::new();
    for spec in ROUTES {
        let Some(params) = spec.matches(&segments) else {
            continue;
        };
        if spec.method == method.as_str() {
            // Every template's parameters fit its builder (a unit test checks
            // each), so a miss here is a bug in ROUTES: treat it as no route.
            return (spec.build)(&mut params.into_iter()).ok_or_else(not_found);
        }
        if let Ok(m) = Method::from_bytes(spec.method.as_bytes()) {
            allowed.push(m);
        }
    }
    if allowed.is_empty() {
        return Err(not_found());
    }
    Err(ApiError::MethodNotAllowed {
        method: method.clone(),
        path: path.to_string(),
        allowed,
    })
}

fn strip_base<'a>(path: &'a str, base_path: Option<&str>) -> &'a str {
    let Some(base) = base_path else {
        return path;
    };
    match path.strip_prefix(base) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        // Not under the base path (a custom domain without the stage, say): route as is.
        _ => path,
    }
}

/// Decodes `%XX` escapes (and `+` as a space in query strings).
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("has a bad percent escape in `{text}`"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("decodes to invalid UTF-8 in `{text}`"))
}

/// The `name=value` pairs of a query string, decoded.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s| {
                percent_decode(s, true)
                    .map_err(|e| ApiError::BadRequest(format!("the query string {e}")))
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Result<Route, ApiError> {
        resolve(&Method::GET, path, None)
    }

    #[test]
    fn matches_paths_and_methods() {
        assert_eq!(get("/workflows").ok(), Some(Route::ListWorkflows));
        assert_eq!(
            get("/executions/a%3Ab/").ok(),
            Some(Route::GetExecution { id: "a:b".into() })
        );
        assert!(matches!(get("/nope"), Err(ApiError::NoRoute { .. })));
        assert!(matches!(
            get("/executions//history"),
            Err(ApiError::NoRoute { .. })
        ));
        assert!(matches!(
            resolve(&Method::DELETE, "/workflows/w", None),
            Err(ApiError::MethodNotAllowed { allowed, .. }) if allowed == [Method::GET, Method::PUT]
        ));
        assert!(matches!(
            get("/executions/%zz"),
            Err(ApiError::BadRequest(_))
        ));
    }

    /// Every entry of ROUTES reaches a route: a sample path made from its
    /// template resolves with its method (a builder that does not fit its
    /// template would make it a 404).
    #[test]
    fn every_listed_route_resolves() {
        for spec in ROUTES {
            let sample = spec
                .path
                .split('/')
                .map(|part| match part.strip_prefix('{') {
                    Some(rest) => format!("p-{}", rest.trim_end_matches('}')),
                    None => part.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(spec.method.as_bytes()).expect("a method");
            let route = resolve(&method, &sample, None);
            assert!(route.is_ok(), "{} {sample}: {route:?}", spec.method);
        }
        assert_eq!(
            resolve(&Method::POST, "/executions/e/signals/go", None).ok(),
            Some(Route::Signal {
                id: "e".into(),
                name: "go".into()
            })
        );
        assert_eq!(get("/openapi.json").ok(), Some(Route::OpenApi));
        assert_eq!(
            resolve(&Method::POST, "/events", None).ok(),
            Some(Route::PostEvent)
        );
    }

    #[test]
    fn strips_a_configured_base_path_only() {
        let route = resolve(&Method::GET, "/prod/workflows", Some("/prod"));
        assert_eq!(route.ok(), Some(Route::ListWorkflows));
        let route = resolve(&Method::GET, "/workflows", Some("/prod"));
        assert_eq!(route.ok(), Some(Route::ListWorkflows));
        assert!(resolve(&Method::GET, "/production/workflows", Some("/prod")).is_err());
        assert!(get("/prod/workflows").is_err());
    }

    #[test]
    fn decodes_queries() {
        let pairs = query_pairs(Some("status=running&limit=5&q=a+b%21")).ok();
        assert_eq!(
            pairs,
            Some(vec![
                ("status".into(), "running".into()),
                ("limit".into(), "5".into()),
                ("q".into(), "a b!".into()),
            ])
        );
    }
}
