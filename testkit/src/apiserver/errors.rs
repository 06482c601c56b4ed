//! Failures answered with `Status` bodies, worded like the real server's.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::FieldError;
use super::managed_fields::{FieldPath, display_path};
use super::routes::json_response;
use super::store::Res;

/// A failure answered with a `Status` body, as the real server does.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) code: u16,
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    pub(super) fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub(super) fn not_found(res: &Res, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified())).with_details(resource_details(res, name))
    }

    pub(super) fn already_exists(res: &Res, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified()))
            .with_details(resource_details(res, name))
    }

    pub(super) fn conflict_modified(res: &Res, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(resource_details(res, name))
    }

    pub(super) fn path_not_found() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    pub(super) fn method_not_allowed() -> ApiError {
        ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource").with_details(json!({}))
    }

    /// 403 Forbidden about an object (`name`) or a whole resource (`None`), as authorization and
    /// admission answer: `secrets "tok" is forbidden: {why}`.
    pub(super) fn forbidden(res: &Res, name: Option<&str>, why: &str) -> ApiError {
        let (message, details) = match name {
            Some(name) => (format!("{} \"{name}\" is forbidden: {why}", res.qualified()), resource_details(res, name)),
            None => {
                let mut details = resource_details(res, "");
                if let Some(map) = details.as_object_mut() {
                    map.remove("name");
                }
                (format!("{} is forbidden: {why}", res.qualified()), details)
            }
        };
        ApiError::new(403, "Forbidden", message).with_details(details)
    }

    /// NamespaceLifecycle's answer to a create in a namespace that is being deleted.
    pub(super) fn namespace_terminating(res: &Res, name: &str, namespace: &str) -> ApiError {
        let mut error = ApiError::forbidden(
            res,
            Some(name),
            &format!("unable to create new content in namespace {namespace} because it is being terminated"),
        );
        if let Some(details) = &mut error.details {
            details["causes"] = json!([{
                "reason": "NamespaceTerminating",
                "message": format!("namespace {namespace} is being terminated"),
                "field": "metadata.namespace",
            }]);
        }
        error
    }

    /// 422 Invalid, worded like the real server's validation errors.
    pub(super) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let qualified_kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let problems: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        let problems = match problems.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let reason = if e.message.starts_with("Required value") {
                    "FieldValueRequired"
                } else if e.message.starts_with("Forbidden") {
                    "FieldValueForbidden"
                } else if e.message.starts_with("Too long") {
                    "FieldValueTooLong"
                } else {
                    "FieldValueInvalid"
                };
                json!({"reason": reason, "message": e.message, "field": e.field})
            })
            .collect();
        let mut details = json!({"kind": kind, "causes": causes});
        if !name.is_empty() {
            details["name"] = Value::String(name.to_owned());
        }
        if !group.is_empty() {
            details["group"] = Value::String(group.to_owned());
        }
        ApiError::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {problems}")).with_details(details)
    }

    /// Server-side apply conflicts, worded like structured-merge-diff's.
    pub(super) fn apply_conflicts(conflicts: &[(String, FieldPath)]) -> ApiError {
        let message = match conflicts {
            [(manager, path)] => format!("Apply failed with 1 conflict: conflict with {manager}: {}", display_path(path)),
            many => {
                let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for (manager, path) in many {
                    by_manager.entry(manager.as_str()).or_default().push(display_path(path));
                }
                let mut lines = Vec::new();
                for (manager, paths) in by_manager {
                    lines.push(format!("conflicts with {manager}:"));
                    lines.extend(paths.into_iter().map(|p| format!("- {p}")));
                }
                format!("Apply failed with {} conflicts: {}", many.len(), lines.join("\n"))
            }
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, path)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": display_path(path),
                })
            })
            .collect();
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    pub(super) fn body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // A failure the server has no reason for (an internal error) carries none.
        if self.reason.is_empty() {
            body.as_object_mut().expect("an object").remove("reason");
        }
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(code, &self.body());
        if self.code == 429 {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `details` of a Status about one object: name, group (if any) and the plural as "kind".
pub(super) fn resource_details(res: &Res, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        details["group"] = Value::String(res.group.clone());
    }
    details
}
