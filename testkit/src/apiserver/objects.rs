//! Helpers for objects kept as JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::errors::ApiError;

/// Resources whose objects carry no `metadata.generation`.
const NO_GENERATION: [&str; 7] = ["secrets", "configmaps", "events", "leases", "namespaces", "serviceaccounts", "endpoints"];

/// An object as a metadata-only request receives it (`Accept: …;as=PartialObjectMetadata;
/// g=meta.k8s.io;v=v1`): its metadata, under the PartialObjectMetadata type.
pub(super) fn partial_metadata(obj: &Value) -> Value {
    serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_default()})
}

/// True when the `Accept` header asks for metadata only (PartialObjectMetadata or its List).
pub(super) fn wants_metadata_only(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.iter().any(|p| *p == "as=PartialObjectMetadata" || *p == "as=PartialObjectMetadataList")
                && params.contains(&"g=meta.k8s.io")
        })
    })
}

pub(super) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(group, _)| group).unwrap_or("")
}

pub(super) fn tracks_generation(plural: &str) -> bool {
    !NO_GENERATION.contains(&plural)
}

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The metadata map, created (or replaced, if it is not a map) when needed.
pub(super) fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

pub(super) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(meta) = meta_mut(obj) {
        meta.insert(field.to_owned(), value);
    }
}

/// Sets or removes a top-level field.
pub(super) fn set_top(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(value) => map.insert(field.to_owned(), value),
            None => map.remove(field),
        };
    }
}

pub(super) fn generation_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1)
}

pub(super) fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A string value as itself, anything else as JSON, for messages.
pub(super) fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn into_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("the request body must be a JSON object")),
    }
}

/// Did anything outside metadata and status change? (That is what bumps generation.)
pub(super) fn spec_changed(old: &Value, new: &Value) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    let outside = |k: &String| k != "metadata" && k != "status";
    let count = |m: &Map<String, Value>| m.keys().filter(|k| outside(k)).count();
    count(old) != count(new) || old.iter().any(|(k, v)| outside(k) && new.get(k) != Some(v))
}

/// Equal apart from managedFields timestamps?
pub(super) fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    fn without_times(obj: &Value) -> Value {
        let mut obj = obj.clone();
        if let Some(Value::Array(entries)) = obj.pointer_mut("/metadata/managedFields") {
            for entry in entries {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("time");
                }
            }
        }
        obj
    }
    without_times(a) == without_times(b)
}

/// Puts back the metadata only the server sets, from the stored object.
pub(super) fn restore_identity(candidate: &mut Value, old: &Value) {
    for field in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => set_meta(candidate, field, value.clone()),
            None => {
                if let Some(meta) = meta_mut(candidate) {
                    meta.remove(field);
                }
            }
        }
    }
}

/// Secrets: `stringData` is write-only; its entries land base64-encoded in `data`.
pub(super) fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(string_data) = map.remove("stringData") else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            data.insert(key, Value::String(STANDARD.encode(plain(&value))));
        }
    }
}
