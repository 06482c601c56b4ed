//! Admission: the real server's NamespaceLifecycle (no writes into a namespace that does not
//! exist, no creates in one that is being deleted) and ResourceQuota object counts; and the
//! namespace lifecycle itself (terminating, then emptied and gone).

use std::sync::Arc;

use serde_json::{Value, json};

use super::errors::ApiError;
use super::objects::{meta_str, set_meta};
use super::routes::Target;
use super::store::{ObjKey, Res, Store};

impl Store {
    /// NamespaceLifecycle for a create (`creating`) or an update of `name` in `t`'s namespace.
    /// Deletes and cluster-scoped objects are never checked, as on the real server.
    pub(super) fn admit_namespace(&self, t: &Target, name: &str, creating: bool) -> Result<(), ApiError> {
        let Some(namespace) = t.namespace.as_deref() else {
            return Ok(());
        };
        let key = namespace_key(namespace);
        let Some(stored) = self.objects.get(&key) else {
            return Err(ApiError::not_found(&key.0, namespace));
        };
        if creating && is_terminating(stored) {
            return Err(ApiError::namespace_terminating(&t.res, name, namespace));
        }
        Ok(())
    }

    /// ResourceQuota: a new object must fit every quota of its namespace that counts its
    /// resource (`count/<resource>`, and the legacy `secrets` / `configmaps`). Usage is counted
    /// live, not from the quota's status.
    pub(super) fn admit_quota(&self, t: &Target, name: &str) -> Result<(), ApiError> {
        let Some(namespace) = t.namespace.as_deref() else {
            return Ok(());
        };
        let counted = quota_names(&t.res);
        let quotas = Res::new("", "resourcequotas");
        for (_, quota) in self.scope(&quotas, Some(namespace), None) {
            let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else {
                continue;
            };
            let mut exceeded: Vec<(&str, u64)> =
                counted.iter().filter_map(|name| Some((name.as_str(), quantity(hard.get(name)?)?))).collect();
            if exceeded.is_empty() {
                continue;
            }
            let used = self.scope(&t.res, Some(namespace), None).count() as u64;
            exceeded.retain(|(_, limit)| used + 1 > *limit);
            if exceeded.is_empty() {
                continue;
            }
            exceeded.sort();
            let why = format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                meta_str(quota, "name").unwrap_or_default(),
                render(&exceeded, |_| 1),
                render(&exceeded, |_| used),
                render(&exceeded, |limit| limit)
            );
            return Err(ApiError::forbidden(&t.res, Some(name), &why));
        }
        Ok(())
    }
}

pub(super) fn namespace_key(name: &str) -> (Res, String, String) {
    (Res::new("", "namespaces"), String::new(), name.to_owned())
}

/// Being deleted: a deletionTimestamp, or the Terminating phase.
pub(super) fn is_terminating(namespace: &Value) -> bool {
    namespace.pointer("/metadata/deletionTimestamp").is_some_and(|ts| !ts.is_null())
        || namespace.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

/// The names under which a quota's `spec.hard` limits the number of objects of a resource.
fn quota_names(res: &Res) -> Vec<String> {
    let mut names = vec![format!("count/{}", res.qualified())];
    if res.group.is_empty() && matches!(res.plural.as_str(), "secrets" | "configmaps") {
        names.push(res.plural.clone());
    }
    names
}

/// `count/secrets=1,secrets=1`: one value per exceeded limit, computed from the limit.
fn render(exceeded: &[(&str, u64)], value: impl Fn(u64) -> u64) -> String {
    exceeded.iter().map(|(name, limit)| format!("{name}={}", value(*limit))).collect::<Vec<_>>().join(",")
}

/// An object count in a quota: a plain integer, as JSON number or string.
fn quantity(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Store {
    /// Marks Namespace `name` as being deleted (created if missing): deletionTimestamp set,
    /// phase Terminating. Returns the stored Namespace.
    pub(super) fn terminate_namespace(&mut self, name: &str, now: &str) -> Arc<Value> {
        let mut namespace = self
            .objects
            .get(&namespace_key(name))
            .map(|ns| (**ns).clone())
            .unwrap_or_else(|| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
        if !is_terminating(&namespace) {
            set_meta(&mut namespace, "deletionTimestamp", Value::String(now.to_owned()));
        }
        namespace["status"] = json!({"phase": "Terminating"});
        self.insert_direct(namespace).expect("a Namespace object is insertable")
    }

    /// What the namespace controller does to a terminating Namespace: deletes every object in
    /// it, then the Namespace.
    pub(super) fn purge_namespace(&mut self, name: &str) {
        let inside: Vec<ObjKey> = self.objects.keys().filter(|key| key.1 == name).cloned().collect();
        for key in inside {
            self.delete_with_dependents(&key, true);
        }
        self.delete_with_dependents(&namespace_key(name), true);
    }
}
