//! Writes other than server-side apply: create, update (PUT), patch, delete, deletecollection.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::FieldError;
use super::errors::{ApiError, resource_details};
use super::managed_fields::{Scope, Writer, client_managed_fields, owned_view, parse_managed_fields, record_update, set_managed_fields};
use super::objects::{
    fold_string_data, generation_of, into_object, meta_str, plain, restore_identity, same_ignoring_times, set_meta, set_top, spec_changed,
    tracks_generation,
};
use super::patch::{PatchBody, json_patch, merge_patch};
use super::routes::{Query, Target};
use super::selectors::Filter;
use super::store::{ObjKey, Store};
use super::validation::{apply_defaults, check_new_name, invalid_group};

/// Who is writing, and how.
pub(super) struct WriteCtx {
    pub(super) manager: String,
    pub(super) dry_run: bool,
    pub(super) now: String,
}

pub(super) type Written = Result<(StatusCode, Arc<Value>), ApiError>;

impl Store {
    pub(super) fn get_object(&self, t: &Target, name: &str) -> Result<Arc<Value>, ApiError> {
        self.objects.get(&t.key(name)).cloned().ok_or_else(|| ApiError::not_found(&t.res, name))
    }

    // --- write requests ----------------------------------------------------------------------

    pub(super) fn create(&mut self, t: &Target, body: Value, ctx: &WriteCtx) -> Written {
        let mut map = into_object(body)?;
        self.check_type_meta(t, &mut map)?;
        check_identity(t, None, &mut map)?;
        let namespace = t.namespace.clone().unwrap_or_default();
        let given_name =
            map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
        let prefix =
            map.get("metadata").and_then(|m| m.get("generateName")).and_then(Value::as_str).filter(|p| !p.is_empty()).map(str::to_owned);
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        // Admission runs before a name is generated: a 403 names the generateName.
        let admitted_as = given_name.as_deref().or(prefix.as_deref()).unwrap_or("Unknown");
        self.admit_namespace(t, admitted_as, true)?;
        let name = match (given_name, prefix.as_deref()) {
            (Some(name), _) => name,
            (None, Some(prefix)) => self.generate_name(&t.res, &namespace, prefix).ok_or_else(|| {
                ApiError::new(
                    409,
                    "AlreadyExists",
                    format!(
                        "{} \"{prefix}\" already exists, the server was not able to generate a unique name for the object",
                        t.res.qualified()
                    ),
                )
            })?,
            (None, None) => {
                return Err(ApiError::invalid(
                    invalid_group(&t.res),
                    &kind,
                    "",
                    &[FieldError { field: "metadata.name".into(), message: "Required value: name or generateName is required".into() }],
                ));
            }
        };
        check_new_name(&t.res, &kind, &name, prefix.as_deref())?;
        // Storage refuses it before it looks for the name: re-posting an object read from the
        // server is an internal error there, not AlreadyExists.
        if map.get("metadata").and_then(|m| m.get("resourceVersion")).and_then(Value::as_str).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::new(500, "", "resourceVersion should not be set on objects to be created"));
        }
        let key = t.key(&name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&t.res, &name));
        }
        let mut obj = Value::Object(map);
        set_meta(&mut obj, "name", Value::String(name));
        let has_status = self.has_status(&t.res.plural);
        if has_status && let Some(map) = obj.as_object_mut() {
            // Status is written through its subresource only.
            map.remove("status");
        }
        if t.res.is_secret() {
            fold_string_data(&mut obj);
        }
        let mut entries = client_managed_fields(&obj, None).unwrap_or_default();
        if entries.is_empty() {
            let writer = Writer { manager: &ctx.manager, api_version: &t.api_version(), subresource: "", now: &ctx.now };
            let view = owned_view(&obj, Scope::Main { has_status });
            record_update(&mut entries, &Map::new(), &view, &writer);
        }
        set_managed_fields(&mut obj, entries);
        self.commit_new(t, key, obj, ctx)
    }

    /// Stores a new object: server metadata, defaults, validation, quota, resourceVersion,
    /// ADDED event.
    pub(super) fn commit_new(&mut self, t: &Target, key: ObjKey, mut obj: Value, ctx: &WriteCtx) -> Written {
        self.stamp_new(&t.res, &mut obj, &ctx.now);
        apply_defaults(&t.res, &mut obj);
        self.validate(&t.res, &obj, None)?;
        self.admit_quota(t, &key.2)?;
        if ctx.dry_run {
            return Ok((StatusCode::CREATED, Arc::new(obj)));
        }
        let rv = self.bump();
        set_meta(&mut obj, "resourceVersion", Value::String(rv.to_string()));
        Ok((StatusCode::CREATED, self.put(key, obj)))
    }

    pub(super) fn replace(&mut self, t: &Target, name: &str, body: Value, ctx: &WriteCtx) -> Written {
        let old = self.get_object(t, name)?;
        let mut map = into_object(body)?;
        self.check_type_meta(t, &mut map)?;
        check_identity(t, Some(name), &mut map)?;
        let candidate = Value::Object(map);
        check_uid_precondition(t, name, &old, &candidate)?;
        check_precondition(t, name, &old, &candidate)?;
        self.write_update(t, &old, candidate, ctx)
    }

    pub(super) fn patch(&mut self, t: &Target, name: &str, patch: &PatchBody, ctx: &WriteCtx) -> Written {
        let old = self.get_object(t, name)?;
        let mut candidate = (*old).clone();
        match patch {
            PatchBody::Merge(patch) => merge_patch(&mut candidate, patch),
            PatchBody::Json(ops) => json_patch(&mut candidate, ops).map_err(|message| ApiError::new(422, "Invalid", message))?,
        }
        let Value::Object(mut map) = candidate else {
            return Err(ApiError::new(422, "Invalid", "the patched object is not a JSON object"));
        };
        self.check_type_meta(t, &mut map)?;
        check_identity(t, Some(name), &mut map)?;
        let candidate = Value::Object(map);
        check_precondition(t, name, &old, &candidate)?;
        self.write_update(t, &old, candidate, ctx)
    }

    /// The common tail of PUT and non-apply patches ("Update" operations).
    fn write_update(&mut self, t: &Target, old: &Arc<Value>, mut candidate: Value, ctx: &WriteCtx) -> Written {
        let has_status = self.has_status(&t.res.plural);
        let scope = if t.status { Scope::Status } else { Scope::Main { has_status } };
        if t.status {
            // The status subresource changes nothing but the status.
            let mut merged = (**old).clone();
            set_top(&mut merged, "status", candidate.get("status").cloned());
            candidate = merged;
        } else if has_status {
            set_top(&mut candidate, "status", old.get("status").cloned());
        }
        restore_identity(&mut candidate, old);
        if t.res.is_secret() {
            fold_string_data(&mut candidate);
        }
        // A client may rewrite managedFields through the main resource (rarely done).
        let mut entries =
            if t.status { None } else { client_managed_fields(&candidate, Some(old)) }.unwrap_or_else(|| parse_managed_fields(old));
        let writer = Writer {
            manager: &ctx.manager,
            api_version: &t.api_version(),
            subresource: if t.status { "status" } else { "" },
            now: &ctx.now,
        };
        record_update(&mut entries, &owned_view(old, scope), &owned_view(&candidate, scope), &writer);
        set_managed_fields(&mut candidate, entries);
        self.commit_update(t, old, candidate, ctx)
    }

    /// Stores a changed object: admission, generation, defaults, no-op detection, validation,
    /// MODIFIED event.
    pub(super) fn commit_update(&mut self, t: &Target, old: &Arc<Value>, mut new: Value, ctx: &WriteCtx) -> Written {
        let name = meta_str(old, "name").unwrap_or_default().to_owned();
        self.admit_namespace(t, &name, false)?;
        apply_defaults(&t.res, &mut new);
        if tracks_generation(&t.res.plural) {
            // Only spec-like changes count; metadata and status writes leave it alone.
            let generation = generation_of(old) + u64::from(spec_changed(old, &new));
            set_meta(&mut new, "generation", json!(generation));
        }
        if same_ignoring_times(old, &new) {
            // Like etcd's identical-write short cut: no new resourceVersion, no event, and
            // managedFields keep their old timestamps.
            return Ok((StatusCode::OK, old.clone()));
        }
        self.validate(&t.res, &new, Some(old))?;
        if ctx.dry_run {
            return Ok((StatusCode::OK, Arc::new(new)));
        }
        let rv = self.bump();
        set_meta(&mut new, "resourceVersion", Value::String(rv.to_string()));
        Ok((StatusCode::OK, self.put(t.key(&name), new)))
    }

    pub(super) fn delete(&mut self, t: &Target, name: &str, options: &Value, query: &Query) -> Written {
        let key = t.key(name);
        let old = self.get_object(t, name)?;
        check_delete_preconditions(t, name, &old, options)?;
        let policy = options.get("propagationPolicy").and_then(Value::as_str).or(query.get("propagationPolicy"));
        let orphan = policy == Some("Orphan") || options.get("orphanDependents") == Some(&Value::Bool(true));
        let dry_run = query.get("dryRun") == Some("All")
            || options.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
        if !dry_run {
            self.delete_with_dependents(&key, !orphan);
        }
        let mut details = resource_details(&t.res, name);
        details["uid"] = json!(meta_str(&old, "uid").unwrap_or_default());
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        });
        Ok((StatusCode::OK, Arc::new(status)))
    }

    pub(super) fn delete_collection(&mut self, t: &Target, query: &Query) -> Written {
        let filter = Filter::new(t, query)?;
        let keys: Vec<ObjKey> =
            self.scope(&t.res, t.namespace.as_deref(), None).filter(|(_, obj)| filter.matches(obj)).map(|(key, _)| key.clone()).collect();
        let mut items = Vec::new();
        if query.get("dryRun") != Some("All") {
            for key in keys {
                if let Some(gone) = self.delete_with_dependents(&key, true) {
                    items.push((*gone).clone());
                }
            }
        }
        let list = json!({
            "kind": format!("{}List", self.kind_for(&t.res.plural)),
            "apiVersion": t.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        });
        Ok((StatusCode::OK, Arc::new(list)))
    }
}

/// Checks the name of the object against the URL and fills in the namespace from it.
pub(super) fn check_identity(t: &Target, url_name: Option<&str>, map: &mut Map<String, Value>) -> Result<(), ApiError> {
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if let Some(url_name) = url_name {
        let matches = match meta.get("name") {
            None | Some(Value::Null) => true,
            Some(Value::String(name)) => name.is_empty() || name == url_name,
            Some(_) => false,
        };
        if !matches {
            let given = meta.get("name").map(plain).unwrap_or_default();
            return Err(ApiError::bad_request(format!("the name of the object ({given}) does not match the name on the URL ({url_name})")));
        }
        meta.insert("name".into(), Value::String(url_name.to_owned()));
    }
    match &t.namespace {
        Some(ns) => {
            let matches = match meta.get("namespace") {
                None | Some(Value::Null) => true,
                Some(Value::String(given)) => given.is_empty() || given == ns,
                Some(_) => false,
            };
            if !matches {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        None => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// Optimistic concurrency: a resourceVersion in the request must be the current one.
fn check_precondition(t: &Target, name: &str, old: &Value, candidate: &Value) -> Result<(), ApiError> {
    let wanted = meta_str(candidate, "resourceVersion").unwrap_or_default();
    if !wanted.is_empty() && Some(wanted) != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict_modified(&t.res, name));
    }
    Ok(())
}

/// A replace (PUT) whose object names a uid is for that object only: another uid (the object
/// was deleted and re-created) is refused by storage, before the resourceVersion is compared.
fn check_uid_precondition(t: &Target, name: &str, old: &Value, candidate: &Value) -> Result<(), ApiError> {
    let wanted = meta_str(candidate, "uid").unwrap_or_default();
    let actual = meta_str(old, "uid").unwrap_or_default();
    if wanted.is_empty() || wanted == actual {
        return Ok(());
    }
    let mut key = vec!["/registry".to_owned()];
    key.extend([&t.res.group, &t.res.plural].into_iter().filter(|part| !part.is_empty()).cloned());
    key.extend(t.namespace.clone());
    key.push(name.to_owned());
    Err(ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": StorageError: invalid object, Code: 4, Key: {}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {wanted}, UID in object meta: {actual}",
            t.res.qualified(),
            key.join("/")
        ),
    )
    .with_details(resource_details(&t.res, name)))
}

fn check_delete_preconditions(t: &Target, name: &str, old: &Value, options: &Value) -> Result<(), ApiError> {
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let wanted = options.pointer(&format!("/preconditions/{field}")).and_then(Value::as_str);
        let actual = meta_str(old, field).unwrap_or_default();
        if let Some(wanted) = wanted
            && wanted != actual
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}",
                    t.res.qualified()
                ),
            )
            .with_details(resource_details(&t.res, name)));
        }
    }
    Ok(())
}
