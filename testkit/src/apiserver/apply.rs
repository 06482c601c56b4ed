//! Server-side apply: merging an apply configuration, conflicts, force, and removing fields a
//! manager no longer applies.

use serde_json::{Map, Value, json};

use super::errors::ApiError;
use super::managed_fields::{
    FieldPath, FieldSet, ManagedEntry, Scope, diff_views, field_set, owned_view, parse_managed_fields, remove_field, set_managed_fields,
};
use super::objects::{fold_string_data, restore_identity};
use super::routes::Target;
use super::store::Store;
use super::validation::check_new_name;
use super::writes::{WriteCtx, Written, check_identity};

impl Store {
    /// Server-side apply.
    pub(super) fn apply(&mut self, t: &Target, name: &str, config: Value, ctx: &WriteCtx, force: bool) -> Written {
        let mut config = config;
        // A null in an apply configuration means "not set" here.
        strip_nulls(&mut config);
        let Value::Object(mut map) = config else {
            return Err(ApiError::bad_request("the apply configuration must be an object"));
        };
        let api_version = t.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(given) if given == api_version => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({given}) does not match the expected API version ({api_version})"
                )));
            }
            None => {
                return Err(ApiError::bad_request("apiVersion must be set in an apply configuration"));
            }
        }
        let Some(kind) = map.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ApiError::bad_request("kind must be set in an apply configuration"));
        };
        self.check_kind(&t.res, &kind)?;
        check_identity(t, Some(name), &mut map)?;
        let mut config = Value::Object(map);
        if t.res.is_secret() {
            fold_string_data(&mut config);
        }
        let has_status = self.has_status(&t.res.plural);
        let scope = if t.status { Scope::Status } else { Scope::Main { has_status } };
        let subresource = if t.status { "status" } else { "" };
        let key = t.key(name);
        let existing = self.objects.get(&key).cloned();
        let live = match &existing {
            Some(obj) => (**obj).clone(),
            None if t.status => return Err(ApiError::not_found(&t.res, name)),
            None => {
                self.admit_namespace(t, name, true)?;
                check_new_name(&t.res, &kind, name, None)?;
                let mut meta = Map::new();
                meta.insert("name".into(), Value::String(name.to_owned()));
                if let Some(ns) = &t.namespace {
                    meta.insert("namespace".into(), Value::String(ns.clone()));
                }
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta})
            }
        };

        let config_view = owned_view(&config, scope);
        let applied = field_set(&config_view);
        let mut entries = parse_managed_fields(&live);
        let is_mine = |e: &ManagedEntry| e.is(&ctx.manager, "Apply", subresource);
        let previous: FieldSet = entries.iter().find(|e| is_mine(e)).map(|e| e.fields.clone()).unwrap_or_default();
        let owned_by_others: FieldSet = entries.iter().filter(|e| !is_mine(e)).flat_map(|e| e.fields.iter().cloned()).collect();

        // Fields this manager applied before but no longer does go away, unless someone else
        // still wants them.
        let mut merged = live.clone();
        for path in previous.difference(&applied) {
            if !owned_by_others.contains(path) {
                remove_field(&mut merged, path, &owned_by_others);
            }
        }
        if let Value::Object(target) = &mut merged {
            merge_config(target, &config_view);
        }

        // Changing a value that another manager owns is a conflict unless forced; forcing
        // takes the field over.
        let (changed, removed) = diff_views(&owned_view(&live, scope), &owned_view(&merged, scope));
        let touched = |p: &FieldPath| changed.contains(p) || removed.contains(p);
        let conflicts: Vec<(String, FieldPath)> = entries
            .iter()
            .filter(|e| !is_mine(e))
            .flat_map(|e| e.fields.iter().filter(|p| touched(p)).map(|p| (e.conflict_label(), p.clone())))
            .collect();
        if !conflicts.is_empty() {
            if !force {
                return Err(ApiError::apply_conflicts(&conflicts));
            }
            for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
                entry.fields.retain(|p| !touched(p));
            }
        }
        match entries.iter_mut().find(|e| is_mine(e)) {
            Some(entry) => {
                entry.fields = applied;
                entry.time = ctx.now.clone();
                entry.api_version = api_version;
            }
            None => entries.push(ManagedEntry {
                manager: ctx.manager.clone(),
                operation: "Apply".into(),
                api_version,
                time: ctx.now.clone(),
                subresource: subresource.into(),
                fields: applied,
            }),
        }
        set_managed_fields(&mut merged, entries);

        match existing {
            None => self.commit_new(t, key, merged, ctx),
            Some(old) => {
                restore_identity(&mut merged, &old);
                self.commit_update(t, &old, merged, ctx)
            }
        }
    }
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Merges an apply configuration into the live object: maps member by member, anything else
/// (scalars, lists) replaced.
fn merge_config(target: &mut Map<String, Value>, config: &Map<String, Value>) {
    for (key, value) in config {
        if let (Some(Value::Object(live)), Value::Object(wanted)) = (target.get_mut(key), value) {
            merge_config(live, wanted);
            continue;
        }
        target.insert(key.clone(), value.clone());
    }
}
