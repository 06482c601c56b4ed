//! Injected faults: which request gets one, and what it answers.

use serde_json::json;

use super::errors::{ApiError, resource_details};
use super::routes::Target;
use super::shared::{Shared, lock};
use super::{Fault, FaultKind};

impl Fault {
    pub(super) fn matches(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb) && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

impl Shared {
    pub(super) fn take_fault(&self, verb: &str, resource: &str) -> Option<FaultKind> {
        let mut meter = lock(&self.meter);
        let index = meter.faults.iter().position(|f| f.matches(verb, resource))?;
        let fault = &mut meter.faults[index];
        let kind = fault.kind.clone();
        fault.times -= 1;
        if fault.times == 0 {
            meter.faults.remove(index);
        }
        Some(kind)
    }
}

impl ApiError {
    /// The answer to a request hit by an injected `FaultKind::Status`.
    pub(super) fn injected(code: u16, target: Option<&Target>) -> ApiError {
        let (reason, message) = match code {
            400 => ("BadRequest", "the request is invalid (injected fault)"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden (injected fault)"),
            404 => ("NotFound", "the server could not find the requested resource"),
            405 => ("MethodNotAllowed", "the server does not allow this method"),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            410 => ("Expired", "the resource version is too old (injected fault)"),
            422 => ("Invalid", "the object is invalid (injected fault)"),
            429 => ("TooManyRequests", "Too many requests, please try again later."),
            500 => ("InternalError", "an error on the server (injected fault) has prevented the request from succeeding"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted (injected fault)"),
            _ => ("InternalError", "injected fault"),
        };
        let mut details = match target {
            Some(t) => {
                let mut details = resource_details(&t.res, t.name.as_deref().unwrap_or_default());
                if t.name.is_none()
                    && let Some(map) = details.as_object_mut()
                {
                    map.remove("name");
                }
                details
            }
            None => json!({}),
        };
        if code == 429 {
            details["retryAfterSeconds"] = json!(1);
        }
        ApiError::new(code, reason, message).with_details(details)
    }
}
