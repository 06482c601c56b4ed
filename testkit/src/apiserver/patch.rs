//! Patch formats: JSON merge patch, strategic merge patch (as merge patch), JSON patch.

use serde_json::{Map, Value};

/// A parsed non-apply patch.
pub(super) enum PatchBody {
    Merge(Value),
    Json(Value),
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Strategic merge patches are applied as merge patches; their `$` directives are dropped.
pub(super) fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub(super) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).ok_or("a JSON patch operation needs an \"op\"")?;
        let path = op.get("path").and_then(Value::as_str).ok_or("a JSON patch operation needs a \"path\"")?;
        let path = pointer_tokens(path)?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("the {name} operation needs a \"value\""));
        let from = || -> Result<Vec<String>, String> {
            let from = op.get("from").and_then(Value::as_str).ok_or_else(|| format!("the {name} operation needs a \"from\""))?;
            pointer_tokens(from)
        };
        match name {
            "add" => add_at(doc, &path, value()?)?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                if path.is_empty() {
                    *doc = value()?;
                } else {
                    remove_at(doc, &path)?;
                    add_at(doc, &path, value()?)?;
                }
            }
            "move" => {
                let moved = remove_at(doc, &from()?)?;
                add_at(doc, &path, moved)?;
            }
            "copy" => {
                let copied = get_at(doc, &from()?)?.clone();
                add_at(doc, &path, copied)?;
            }
            "test" => {
                let expected = value()?;
                if *get_at(doc, &path)? != expected {
                    return Err(format!("testing value {} failed", op.get("path").and_then(Value::as_str).unwrap_or_default()));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn array_index(token: &str, len: usize) -> Result<usize, String> {
    match token.parse::<usize>() {
        Ok(index) if index < len => Ok(index),
        _ => Err(format!("array index {token:?} is out of range")),
    }
}

fn get_at<'a>(doc: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map.get(token).ok_or_else(|| format!("missing field {token:?}"))?,
            Value::Array(items) => &items[array_index(token, items.len())?],
            _ => return Err(format!("cannot descend into {token:?}")),
        };
    }
    Ok(current)
}

fn get_at_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map.get_mut(token).ok_or_else(|| format!("missing field {token:?}"))?,
            Value::Array(items) => {
                let index = array_index(token, items.len())?;
                &mut items[index]
            }
            _ => return Err(format!("cannot descend into {token:?}")),
        };
    }
    Ok(current)
}

fn add_at(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_at_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(index) if index <= items.len() => items.insert(index, value),
            _ => return Err(format!("array index {last:?} is out of range")),
        },
        _ => return Err(format!("cannot add {last:?} to a scalar")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path.split_last().ok_or("cannot remove the whole document")?;
    match get_at_mut(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| format!("missing field {last:?}")),
        Value::Array(items) => {
            let index = array_index(last, items.len())?;
            Ok(items.remove(index))
        }
        _ => Err(format!("cannot remove {last:?} from a scalar")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        let ops = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "move", "from": "/b/c", "path": "/d"},
            {"op": "copy", "from": "/d", "path": "/e~1f"},
            {"op": "remove", "path": "/a/1"},
            {"op": "test", "path": "/d", "value": 2}
        ]);
        json_patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"a": [0, 2, 3], "b": {}, "d": 2, "e/f": 2}));
        let failing = json!([{"op": "test", "path": "/d", "value": 3}]);
        assert!(json_patch(&mut doc, &failing).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }
}
