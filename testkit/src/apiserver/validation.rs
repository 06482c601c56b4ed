//! Validation of objects before they are stored: names and per-resource validators.

use serde_json::Value;

use super::FieldError;
use super::errors::ApiError;
use super::objects::meta_str;
use super::store::{Res, Store};

impl Store {
    pub(super) fn validate(&self, res: &Res, obj: &Value) -> Result<(), ApiError> {
        let Some(validator) = self.validators.get(&res.plural) else {
            return Ok(());
        };
        let errors = validator(obj);
        if errors.is_empty() {
            return Ok(());
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = meta_str(obj, "name").unwrap_or_default();
        Err(ApiError::invalid(&res.group, kind, name, &errors))
    }
}

/// Object names must be DNS subdomains (RFC 1123), as for Secrets and custom resources.
pub(super) fn validate_name(res: &Res, kind: &str, name: &str) -> Result<(), ApiError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(());
    }
    Err(ApiError::invalid(
        &res.group,
        kind,
        name,
        &[FieldError {
            field: "metadata.name".into(),
            message: format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        }],
    ))
}
