//! Routing: which path and method reach which handler.
//!
//! Routes go by the raw request path (minus a configured base path such as
//! an API Gateway stage), so the same table serves `baton serve` locally and
//! API Gateway on Lambda, whose own path parameters are not needed.

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
    /// `POST /executions/{id}/signals/{name}`
    Signal { id: String, name: String },
}

impl Route {
    /// The execution a route concerns, for logs.
    pub fn execution_id(&self) -> Option<&str> {
        match self {
            Route::GetExecution { id }
            | Route::History { id }
            | Route::Cancel { id }
            | Route::Signal { id, .. } => Some(id),
            _ => None,
        }
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
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let own = |s: &str| s.to_string();
    let candidates: Vec<(Method, Route)> = match s.as_slice() {
        ["workflows"] => vec![(Method::GET, Route::ListWorkflows)],
        ["workflows", name] if !name.is_empty() => vec![
            (Method::GET, Route::GetWorkflow { name: own(name) }),
            (Method::PUT, Route::PutWorkflow { name: own(name) }),
        ],
        ["workflows", name, "executions"] if !name.is_empty() => vec![(
            Method::POST,
            Route::StartExecution {
                workflow: own(name),
            },
        )],
        ["executions"] => vec![(Method::GET, Route::ListExecutions)],
        ["executions", id] if !id.is_empty() => {
            vec![(Method::GET, Route::GetExecution { id: own(id) })]
        }
        ["executions", id, "history"] if !id.is_empty() => {
            vec![(Method::GET, Route::History { id: own(id) })]
        }
        ["executions", id, "cancel"] if !id.is_empty() => {
            vec![(Method::POST, Route::Cancel { id: own(id) })]
        }
        ["executions", id, "signals", name] if !id.is_empty() && !name.is_empty() => vec![(
            Method::POST,
            Route::Signal {
                id: own(id),
                name: own(name),
            },
        )],
        _ => return Err(not_found()),
    };
    let allowed: Vec<Method> = candidates.iter().map(|(m, _)| m.clone()).collect();
    candidates
        .into_iter()
        .find(|(m, _)| m == method)
        .map(|(_, route)| route)
        .ok_or_else(|| ApiError::MethodNotAllowed {
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
