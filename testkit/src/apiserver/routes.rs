//! HTTP: routing requests to resources, query parameters, and the request handler.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::admission::is_terminating;
use super::errors::ApiError;
use super::objects::{partial_metadata, wants_metadata_only};
use super::patch::{PatchBody, strip_directives};
use super::shared::Shared;
use super::store::{ObjKey, Res};
use super::time::now_rfc3339;
use super::watch::open_watch;
use super::writes::{WriteCtx, Written};
use super::{FaultKind, FieldError};

/// Largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 8 << 20;

/// A request path that names a resource.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub(super) res: Res,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) status: bool,
}

impl Target {
    pub(super) fn api_version(&self) -> String {
        if self.res.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.res.group, self.version) }
    }

    pub(super) fn key(&self, name: &str) -> ObjKey {
        (self.res.clone(), self.namespace.clone().unwrap_or_default(), name.to_owned())
    }

    /// The resource as request counts and faults name it.
    fn counted_resource(&self) -> String {
        if self.status { format!("{}/status", self.res.plural) } else { self.res.plural.clone() }
    }
}

enum Route {
    Object(Target),
    Version,
    Health,
    Unknown,
}

impl Route {
    pub(super) fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match segments.as_slice() {
            ["version"] => return Route::Version,
            ["healthz" | "livez" | "readyz"] => return Route::Health,
            ["api", version, rest @ ..] => Self::target("", version, rest),
            ["apis", group, version, rest @ ..] => Self::target(group, version, rest),
            _ => None,
        };
        target.map_or(Route::Unknown, Route::Object)
    }

    pub(super) fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
        // `namespaces/{ns}/{plural}…` is namespaced, except `namespaces/{name}/status` and
        // `…/finalize`, which are subresources of a Namespace.
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, ..] if !matches!(*plural, "status" | "finalize") => (Some((*ns).to_owned()), &rest[2..]),
            _ => (None, rest),
        };
        let (plural, name, status) = match rest {
            [plural] => (*plural, None, false),
            [plural, name] => (*plural, Some(*name), false),
            [plural, name, "status"] => (*plural, Some(*name), true),
            _ => return None,
        };
        Some(Target { res: Res::new(group, plural), version: version.to_owned(), namespace, name: name.map(str::to_owned), status })
    }
}

/// Decoded query parameters.
pub(super) struct Query(HashMap<String, String>);

impl Query {
    pub(super) fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn verb_of(method: &Method, route: &Route, query: &Query) -> &'static str {
    let (is_object, named) = match route {
        Route::Object(t) => (true, t.name.is_some()),
        _ => (false, false),
    };
    match *method {
        Method::GET if is_object && !named && query.flag("watch") => "watch",
        Method::GET if is_object && !named => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if is_object && !named => "deletecollection",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

/// The field manager of an Update operation: `fieldManager`, else the User-Agent's product.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|product| !product.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Apply configurations may be YAML or JSON.
fn parse_apply_config(body: &[u8]) -> Result<Value, ApiError> {
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{');
    if looks_like_json && let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let route = Route::parse(parts.uri.path());
    let verb = verb_of(&parts.method, &route, &query);
    let resource = match &route {
        Route::Object(t) => t.counted_resource(),
        Route::Version => "version".to_owned(),
        Route::Health => "healthz".to_owned(),
        Route::Unknown => String::new(),
    };
    shared.count(verb, &resource);
    match shared.take_fault(verb, &resource) {
        Some(FaultKind::Status(code)) => {
            let target = match &route {
                Route::Object(t) => Some(t),
                _ => None,
            };
            return ApiError::injected(code, target).into_response();
        }
        Some(FaultKind::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(FaultKind::DelayAnswer(delay)) => {
            let response = serve(&shared, parts, body, query, route, verb, &resource).await;
            tokio::time::sleep(delay).await;
            return response;
        }
        None => {}
    }
    serve(&shared, parts, body, query, route, verb, &resource).await
}

/// The answer to a request that no injected fault stopped.
async fn serve(
    shared: &Arc<Shared>,
    parts: axum::http::request::Parts,
    body: axum::body::Body,
    query: Query,
    route: Route,
    verb: &str,
    resource: &str,
) -> Response {
    if let Route::Object(t) = &route
        && let Err(denied) = shared.authorize(verb, resource, t, &parts.headers)
    {
        return denied.into_response();
    }

    let t = match route {
        Route::Object(t) => t,
        Route::Version if parts.method == Method::GET => {
            let version = json!({
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0",
                "platform": "linux/amd64",
            });
            return json_response(StatusCode::OK, &version);
        }
        Route::Health if parts.method == Method::GET => return "ok".into_response(),
        Route::Version | Route::Health => return ApiError::method_not_allowed().into_response(),
        Route::Unknown => return ApiError::path_not_found().into_response(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response();
        }
    };
    // A cluster-scoped resource has no namespaced path: the real server answers 404.
    if t.namespace.is_some() && shared.with_store(|store| store.cluster_scoped.contains(&t.res.plural)) {
        return ApiError::path_not_found().into_response();
    }
    if t.status {
        let exists = shared.with_store(|store| store.has_status(&t.res.plural));
        if !exists {
            return ApiError::path_not_found().into_response();
        }
        if !matches!(verb, "get" | "update" | "patch") {
            return ApiError::method_not_allowed().into_response();
        }
    }
    let metadata_only = wants_metadata_only(parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let ctx = WriteCtx { manager: field_manager(&query, &parts.headers), dry_run: query.get("dryRun") == Some("All"), now: now_rfc3339() };
    let written = match (verb, t.name.as_deref()) {
        ("get", Some(name)) => shared.with_store(|store| store.get_object(&t, name)).map(|obj| (StatusCode::OK, obj)),
        ("list", None) => {
            return match shared.with_store(|store| store.list_page(&t, &query)) {
                Ok(page) => page.into_response(metadata_only),
                Err(e) => e.into_response(),
            };
        }
        ("watch", None) => {
            return open_watch(shared, &t, &query, metadata_only).unwrap_or_else(IntoResponse::into_response);
        }
        ("create", None) => parse_json(&body).and_then(|obj| shared.with_store(|store| store.create(&t, obj, &ctx))),
        ("update", Some(name)) => parse_json(&body).and_then(|obj| shared.with_store(|store| store.replace(&t, name, obj, &ctx))),
        ("patch", Some(name)) => patch_request(shared, &t, name, &parts.headers, &query, &body, ctx),
        ("delete", Some(name)) if t.res.group.is_empty() && t.res.plural == "namespaces" && !ctx.dry_run => {
            delete_namespace(shared, &t, name)
        }
        ("delete", Some(name)) => {
            let options = if body.iter().all(u8::is_ascii_whitespace) { Ok(Value::Null) } else { parse_json(&body) };
            options.and_then(|options| shared.with_store(|store| store.delete(&t, name, &options, &query)))
        }
        ("deletecollection", None) => shared.with_store(|store| store.delete_collection(&t, &query)),
        _ => Err(ApiError::method_not_allowed()),
    };
    match written {
        // A Status (delete) is never converted; objects are, when metadata is all that was asked.
        Ok((code, obj)) if metadata_only && obj.get("kind").and_then(Value::as_str) != Some("Status") => {
            json_response(code, &partial_metadata(&obj))
        }
        Ok((code, obj)) => json_response(code, &*obj),
        Err(e) => e.into_response(),
    }
}

/// How long the stand-in namespace controller takes to empty a deleted namespace.
const NAMESPACE_CONTROLLER_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// DELETE of a Namespace, as the real server does it: the answer is the Namespace, now
/// Terminating; the namespace controller then deletes everything in it and finally the
/// Namespace (here shortly after, on its own task).
fn delete_namespace(shared: &Arc<Shared>, t: &Target, name: &str) -> Written {
    let now = now_rfc3339();
    let namespace = shared.with_store(|store| {
        let existing = store.get_object(t, name)?;
        if is_terminating(&existing) {
            // What the real server answers to a second DELETE.
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system."
                ),
            ));
        }
        Ok(store.terminate_namespace(name, &now))
    })?;
    let (shared, name) = (shared.clone(), name.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(NAMESPACE_CONTROLLER_DELAY).await;
        shared.with_store(|store| store.purge_namespace(&name));
    });
    Ok((StatusCode::OK, namespace))
}

fn patch_request(shared: &Shared, t: &Target, name: &str, headers: &HeaderMap, query: &Query, body: &[u8], ctx: WriteCtx) -> Written {
    let media = media_type(headers);
    if media == "application/apply-patch+yaml" {
        // Unlike other writes, apply has no User-Agent fallback: the manager must be named.
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                &[FieldError { field: "fieldManager".into(), message: "Required value: is required for apply patch".into() }],
            ));
        };
        let ctx = WriteCtx { manager: manager.to_owned(), ..ctx };
        let force = query.flag("force");
        let config = parse_apply_config(body)?;
        return shared.with_store(|store| store.apply(t, name, config, &ctx, force));
    }
    if query.get("force").is_some() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            &[FieldError { field: "force".into(), message: "Forbidden: may not be specified for non-apply patch".into() }],
        ));
    }
    let patch = match media.as_str() {
        "application/merge-patch+json" => PatchBody::Merge(parse_json(body)?),
        "application/strategic-merge-patch+json" => {
            let mut patch = parse_json(body)?;
            strip_directives(&mut patch);
            PatchBody::Merge(patch)
        }
        "application/json-patch+json" => PatchBody::Json(parse_json(body)?),
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {media:?})"
                ),
            ));
        }
    };
    if let PatchBody::Merge(patch) = &patch
        && !patch.is_object()
    {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    shared.with_store(|store| store.patch(t, name, &patch, &ctx))
}

pub(super) fn json_response<T: Serialize + ?Sized>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
