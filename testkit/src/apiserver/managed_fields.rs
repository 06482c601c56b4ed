//! Field ownership: `metadata.managedFields`, FieldsV1, and what Update operations own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::objects::meta_mut;

/// Metadata fields that field managers can own; the rest of metadata is the server's.
const OWNED_METADATA: [&str; 5] = ["labels", "annotations", "finalizers", "ownerReferences", "generateName"];

/// Which part of an object a write may change, and hence which fields its manager owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// The main resource; with a status subresource, `.status` is out of reach.
    Main { has_status: bool },
    /// The status subresource: only `.status`.
    Status,
}

/// A field path in FieldsV1 notation, one element per level: `["f:data", "f:token"]`.
pub(super) type FieldPath = Vec<String>;
pub(super) type FieldSet = BTreeSet<FieldPath>;

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ManagedEntry {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) api_version: String,
    pub(super) time: String,
    /// Empty for the main resource.
    pub(super) subresource: String,
    pub(super) fields: FieldSet,
}

impl ManagedEntry {
    pub(super) fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn from_json(entry: &Value) -> Option<ManagedEntry> {
        let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        entry.as_object()?;
        let mut fields = FieldSet::new();
        if let Some(v1) = entry.get("fieldsV1") {
            fields_from_v1(v1, &mut Vec::new(), &mut fields);
        }
        Some(ManagedEntry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields,
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_to_v1(&self.fields),
        });
        if !self.subresource.is_empty() {
            entry["subresource"] = Value::String(self.subresource.clone());
        }
        entry
    }

    /// How conflict messages name the manager: Update managers come with their apiVersion.
    pub(super) fn conflict_label(&self) -> String {
        if self.operation == "Apply" { format!("\"{}\"", self.manager) } else { format!("\"{}\" using {}", self.manager, self.api_version) }
    }
}

/// Who performs an Update operation.
pub(super) struct Writer<'a> {
    pub(super) manager: &'a str,
    pub(super) api_version: &'a str,
    pub(super) subresource: &'a str,
    pub(super) now: &'a str,
}

pub(super) fn parse_managed_fields(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ManagedEntry::from_json).collect())
        .unwrap_or_default()
}

/// managedFields the client sent that differ from the stored ones, if any: the client meant to
/// replace them.
pub(super) fn client_managed_fields(candidate: &Value, old: Option<&Value>) -> Option<Vec<ManagedEntry>> {
    let sent = candidate.pointer("/metadata/managedFields")?;
    let stored = old.and_then(|old| old.pointer("/metadata/managedFields"));
    match sent {
        Value::Array(entries) if !entries.is_empty() && Some(sent) != stored => Some(parse_managed_fields(candidate)),
        _ => None,
    }
}

/// Writes the entries back in the real server's order (operation, time, manager, …), dropping
/// managers that own nothing any more.
pub(super) fn set_managed_fields(obj: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(meta) = meta_mut(obj) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        let entries = entries.iter().map(ManagedEntry::to_json).collect();
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// The part of an object that field managers can own, within `scope`. Main-scope views always
/// have a (possibly empty) `metadata` map so that diffs never see metadata itself appear.
pub(super) fn owned_view(obj: &Value, scope: Scope) -> Map<String, Value> {
    let mut view = Map::new();
    let Some(fields) = obj.as_object() else {
        return view;
    };
    for (key, value) in fields {
        let keep = match (key.as_str(), scope) {
            ("apiVersion" | "kind" | "metadata", _) => false,
            ("status", Scope::Status) => true,
            ("status", Scope::Main { has_status }) => !has_status,
            (_, Scope::Status) => false,
            (_, Scope::Main { .. }) => true,
        };
        if keep {
            view.insert(key.clone(), value.clone());
        }
    }
    if let Scope::Main { .. } = scope {
        let meta: Map<String, Value> = obj
            .get("metadata")
            .and_then(Value::as_object)
            .map(|meta| meta.iter().filter(|(k, _)| OWNED_METADATA.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        view.insert("metadata".into(), Value::Object(meta));
    }
    view
}

fn field_key(key: &str) -> String {
    format!("f:{key}")
}

fn metadata_path() -> FieldPath {
    vec![field_key("metadata")]
}

/// The leaf fields of an apply configuration. Lists and scalars are leaves (lists are treated
/// atomically), and so are empty maps.
pub(super) fn field_set(view: &Map<String, Value>) -> FieldSet {
    fn walk(map: &Map<String, Value>, prefix: &mut FieldPath, out: &mut FieldSet) {
        for (key, value) in map {
            prefix.push(field_key(key));
            match value {
                Value::Object(child) if !child.is_empty() => walk(child, prefix, out),
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(view, &mut Vec::new(), &mut out);
    out.remove(&metadata_path());
    out
}

/// Paths that differ between two views: (added or modified, removed). Maps present on both
/// sides are compared member by member; an added map counts itself and all its members.
pub(super) fn diff_views(old: &Map<String, Value>, new: &Map<String, Value>) -> (FieldSet, FieldSet) {
    fn subtree(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        out.insert(prefix.clone());
        descendants(value, prefix, out);
    }
    fn descendants(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        if let Value::Object(map) = value {
            for (key, child) in map {
                prefix.push(field_key(key));
                subtree(child, prefix, out);
                prefix.pop();
            }
        }
    }
    fn walk(old: &Map<String, Value>, new: &Map<String, Value>, prefix: &mut FieldPath, changed: &mut FieldSet, removed: &mut FieldSet) {
        for (key, new_value) in new {
            prefix.push(field_key(key));
            match (old.get(key), new_value) {
                (None, _) => subtree(new_value, prefix, changed),
                (Some(old_value), _) if old_value == new_value => {}
                (Some(Value::Object(old_map)), Value::Object(new_map)) => {
                    walk(old_map, new_map, prefix, changed, removed);
                }
                (Some(old_value), _) => {
                    changed.insert(prefix.clone());
                    descendants(new_value, prefix, changed);
                    descendants(old_value, prefix, removed);
                }
            }
            prefix.pop();
        }
        for (key, old_value) in old {
            if !new.contains_key(key) {
                prefix.push(field_key(key));
                subtree(old_value, prefix, removed);
                prefix.pop();
            }
        }
    }
    let mut changed = FieldSet::new();
    let mut removed = FieldSet::new();
    walk(old, new, &mut Vec::new(), &mut changed, &mut removed);
    changed.remove(&metadata_path());
    removed.remove(&metadata_path());
    (changed, removed)
}

/// Ownership after an Update operation: the writer takes every field it added or changed;
/// nobody keeps fields that were changed or removed under them.
pub(super) fn record_update(
    entries: &mut Vec<ManagedEntry>,
    old_view: &Map<String, Value>,
    new_view: &Map<String, Value>,
    writer: &Writer<'_>,
) {
    let (changed, removed) = diff_views(old_view, new_view);
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if changed.is_empty() {
        return;
    }
    let position = entries.iter().position(|e| e.is(writer.manager, "Update", writer.subresource));
    let entry = match position {
        Some(index) => &mut entries[index],
        None => {
            entries.push(ManagedEntry {
                manager: writer.manager.to_owned(),
                operation: "Update".into(),
                api_version: String::new(),
                time: String::new(),
                subresource: writer.subresource.to_owned(),
                fields: FieldSet::new(),
            });
            let last = entries.len() - 1;
            &mut entries[last]
        }
    };
    entry.fields.extend(changed);
    entry.time = writer.now.to_owned();
    entry.api_version = writer.api_version.to_owned();
}

/// A `FieldsV1` document from a set of owned paths: `{}` marks an owned leaf, `"."` an owned
/// map that also has owned members.
fn fields_to_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut map = Map::new();
        if node.owned && !node.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (key, child) in &node.children {
            map.insert(key.clone(), render(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.owned = true;
    }
    render(&root)
}

fn fields_from_v1(v1: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = v1.as_object() else {
        return;
    };
    for (key, child) in map {
        if key == "." {
            continue;
        }
        prefix.push(key.clone());
        let owned = child.as_object().is_none_or(|c| c.is_empty() || c.contains_key("."));
        if owned {
            out.insert(prefix.clone());
        }
        fields_from_v1(child, prefix, out);
        prefix.pop();
    }
}

/// `.data.token`, as conflict messages print paths.
pub(super) fn display_path(path: &[String]) -> String {
    path.iter()
        .map(|element| match element.strip_prefix("f:") {
            Some(name) => format!(".{name}"),
            None => element.clone(),
        })
        .collect()
}

/// Removes a field an apply no longer sets, and maps left empty by that unless someone owns
/// them (metadata itself always stays).
pub(super) fn remove_field(obj: &mut Value, path: &[String], keep: &FieldSet) {
    fn walk(map: &mut Map<String, Value>, path: &[String], depth: usize, keep: &FieldSet) {
        // Only `f:` elements name map members; keyed list items are owned with their list.
        let Some(key) = path[depth].strip_prefix("f:") else {
            return;
        };
        if depth + 1 == path.len() {
            map.remove(key);
            return;
        }
        let Some(Value::Object(child)) = map.get_mut(key) else {
            return;
        };
        walk(child, path, depth + 1, keep);
        let emptied = child.is_empty();
        if emptied && !keep.contains(&path[..=depth]) && !(depth == 0 && key == "metadata") {
            map.remove(key);
        }
    }
    if let Value::Object(map) = obj
        && !path.is_empty()
    {
        walk(map, path, 0, keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let v1 = json!({
            "f:data": {".": {}, "f:a": {}, "f:b": {}},
            "f:metadata": {"f:labels": {"f:x": {}}},
            "f:type": {}
        });
        let mut set = FieldSet::new();
        fields_from_v1(&v1, &mut Vec::new(), &mut set);
        assert!(set.contains(&vec!["f:data".to_owned()]));
        assert!(!set.contains(&vec!["f:metadata".to_owned()]));
        assert_eq!(fields_to_v1(&set), v1);
    }
}
