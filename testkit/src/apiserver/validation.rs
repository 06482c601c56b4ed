//! Validation before an object is stored, as the real server's registry strategies do it:
//! names and generateName, labels, annotations, Secret and ConfigMap rules, defaults, and the
//! validators plugged in per resource. Messages are the real server's, word for word.

use serde_json::{Map, Value};

use super::FieldError;
use super::errors::ApiError;
use super::objects::{meta_str, plain};
use super::store::{Res, Store};

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE_WHEN_SET: &str = "Forbidden: field is immutable when `immutable` is set";
/// All annotations of an object together, keys and values.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// All data of a Secret or ConfigMap together.
const MAX_DATA_BYTES: usize = 1024 * 1024;
/// Generated names are the prefix (cut to this length) plus five characters.
pub(super) const MAX_GENERATE_NAME_PREFIX: usize = 58;

impl Store {
    /// Everything the real server checks about an object before storing it (`old`: the stored
    /// object, for updates). All problems are answered together in one 422, as the real server
    /// does.
    pub(super) fn validate(&self, res: &Res, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let mut errors = metadata_errors(obj);
        if let Some(old) = old {
            errors.extend(immutable_type_errors(res, obj, old));
        }
        if res.is_secret() || is_configmap(res) {
            errors.extend(data_errors(res, obj, old));
        }
        if let Some(validator) = self.validators.get(&res.plural) {
            errors.extend(validator(obj));
        }
        if errors.is_empty() {
            return Ok(());
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = meta_str(obj, "name").unwrap_or_default();
        Err(ApiError::invalid(invalid_group(res), kind, name, &errors))
    }
}

/// The group named in 422 messages. events.k8s.io Events are core Events inside the real server,
/// so their errors name no group (recorded: `Event "t1.gt5cf" is invalid`).
pub(super) fn invalid_group(res: &Res) -> &str {
    if res.group == "events.k8s.io" { "" } else { &res.group }
}

/// Defaults the real server fills in before validation.
pub(super) fn apply_defaults(res: &Res, obj: &mut Value) {
    if res.is_secret()
        && let Some(map) = obj.as_object_mut()
        && map.get("type").and_then(Value::as_str).is_none_or(str::is_empty)
    {
        map.insert("type".into(), Value::String("Opaque".into()));
    }
}

/// The name of a new object, and the generateName it came from: names are DNS-1123
/// subdomains (Namespaces: labels); a generateName must itself be a valid prefix.
pub(super) fn check_new_name(res: &Res, kind: &str, name: &str, generate_name: Option<&str>) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(prefix) = generate_name {
        // A trailing '-' is how prefixes end; the real server masks it before checking.
        let masked = match prefix.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => prefix.to_owned(),
        };
        errors.extend(name_rule(res, &masked).into_iter().map(|msg| invalid("metadata.generateName", prefix, &msg)));
    }
    errors.extend(name_rule(res, name).into_iter().map(|msg| invalid("metadata.name", name, &msg)));
    if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(invalid_group(res), kind, name, &errors)) }
}

fn name_rule(res: &Res, name: &str) -> Vec<String> {
    if res.group.is_empty() && res.plural == "namespaces" { dns1123_label(name) } else { dns1123_subdomain(name) }
}

fn is_configmap(res: &Res) -> bool {
    res.group.is_empty() && res.plural == "configmaps"
}

/// `Invalid value: "x": msg`, as Go's `field.Invalid` prints.
fn invalid(field: &str, value: &str, message: &str) -> FieldError {
    FieldError { field: field.to_owned(), message: format!("Invalid value: {value:?}: {message}") }
}

fn metadata_errors(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let empty = Map::new();
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
    for (key, value) in labels {
        errors.extend(qualified_name(key).into_iter().map(|msg| invalid("metadata.labels", key, &msg)));
        let value = plain(value);
        errors.extend(label_value(&value).into_iter().map(|msg| invalid("metadata.labels", &value, &msg)));
    }
    let annotations = obj.pointer("/metadata/annotations").and_then(Value::as_object).unwrap_or(&empty);
    let mut size = 0;
    for (key, value) in annotations {
        errors.extend(qualified_name(&key.to_lowercase()).into_iter().map(|msg| invalid("metadata.annotations", key, &msg)));
        size += key.len() + plain(value).len();
    }
    if size > MAX_ANNOTATIONS_BYTES {
        errors.push(FieldError {
            field: "metadata.annotations".into(),
            message: format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        });
    }
    errors
}

/// A Secret's type cannot change.
fn immutable_type_errors(res: &Res, obj: &Value, old: &Value) -> Vec<FieldError> {
    if !res.is_secret() || obj.get("type") == old.get("type") {
        return Vec::new();
    }
    let new_type = obj.get("type").map(plain).unwrap_or_default();
    vec![invalid("type", &new_type, "field is immutable")]
}

/// Keys and size of Secret/ConfigMap data; with `immutable: true` stored, no data change and no
/// way back to mutable.
fn data_errors(res: &Res, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let fields: &[&str] = if res.is_secret() { &["data"] } else { &["data", "binaryData"] };
    let mut errors = Vec::new();
    if let Some(old) = old
        && old.get("immutable") == Some(&Value::Bool(true))
    {
        if obj.get("immutable") != Some(&Value::Bool(true)) {
            errors.push(FieldError { field: "immutable".into(), message: IMMUTABLE_WHEN_SET.into() });
        }
        for field in fields {
            if obj.get(field) != old.get(field) {
                errors.push(FieldError { field: (*field).into(), message: IMMUTABLE_WHEN_SET.into() });
            }
        }
    }
    let mut size = 0;
    for field in fields {
        let Some(data) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in data {
            errors.extend(config_key(key).into_iter().map(|msg| invalid(&format!("{field}[{key}]"), key, &msg)));
            size += plain(value).len();
        }
    }
    // Secrets count decoded bytes; base64 is 4/3 of that.
    let size = if res.is_secret() { size / 4 * 3 } else { size };
    if size > MAX_DATA_BYTES {
        errors.push(FieldError { field: "data".into(), message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes") });
    }
    errors
}

// --- the real server's string rules (k8s.io/apimachinery/pkg/util/validation) ------------------

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 253 {
        errors.push(too_long(253));
    }
    if !s.split('.').all(is_dns_label) {
        errors.push(DNS1123_SUBDOMAIN.to_owned());
    }
    errors
}

fn dns1123_label(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 63 {
        errors.push(too_long(63));
    }
    if !is_dns_label(s) {
        errors.push(DNS1123_LABEL.to_owned());
    }
    errors
}

/// Label keys and annotation keys: `[prefix/]name`.
fn qualified_name(s: &str) -> Vec<String> {
    let parts: Vec<&str> = s.split('/').collect();
    let mut errors = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_owned());
            } else {
                errors.extend(dns1123_subdomain(prefix).into_iter().map(|msg| format!("prefix part {msg}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errors.push(format!("name part {}", too_long(63)));
    }
    if !is_qualified_part(name) {
        errors.push(format!("name part {QUALIFIED_NAME}"));
    }
    errors
}

fn label_value(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 63 {
        errors.push(too_long(63));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        errors.push(LABEL_VALUE.to_owned());
    }
    errors
}

fn config_key(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if s.len() > 253 {
        errors.push(too_long(253));
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        errors.push(CONFIG_KEY.to_owned());
    }
    if s == "." {
        errors.push("must not be '.'".to_owned());
    } else if s == ".." {
        errors.push("must not be '..'".to_owned());
    } else if s.starts_with("..") {
        errors.push("must not start with '..'".to_owned());
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_rules() {
        assert!(dns1123_subdomain("t1.187a2b3c4d5e6f70").is_empty());
        assert_eq!(dns1123_subdomain("t1."), [DNS1123_SUBDOMAIN]);
        assert!(qualified_name("app.kubernetes.io/managed-by").is_empty());
        assert_eq!(qualified_name("bad key!"), [format!("name part {QUALIFIED_NAME}")]);
        assert_eq!(qualified_name("/x"), ["prefix part must be non-empty"]);
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(label_value("").is_empty());
        assert_eq!(label_value(&"x".repeat(64)), [too_long(63)]);
        assert_eq!(label_value("-x"), [LABEL_VALUE]);
        assert!(config_key("token.json").is_empty());
        assert_eq!(config_key("a/b"), [CONFIG_KEY]);
    }
}
