//! Resource kinds: plural <-> kind, learnt from CRDs and writes, and the type meta of requests.

use serde_json::{Map, Value};

use super::errors::ApiError;
use super::objects::plain;
use super::routes::Target;
use super::store::{Res, Store};

/// Kinds known from the start (plural, kind); more come from CRDs, writes and `register_kind`.
pub(super) const BUILTIN_KINDS: [(&str, &str); 12] = [
    ("secrets", "Secret"),
    ("configmaps", "ConfigMap"),
    ("events", "Event"),
    ("leases", "Lease"),
    ("navigatortokens", "NavigatorToken"),
    ("customresourcedefinitions", "CustomResourceDefinition"),
    ("namespaces", "Namespace"),
    ("pods", "Pod"),
    ("services", "Service"),
    ("serviceaccounts", "ServiceAccount"),
    ("deployments", "Deployment"),
    ("resourcequotas", "ResourceQuota"),
];

impl Store {
    pub(super) fn register_kind(&mut self, plural: &str, kind: &str) {
        self.kinds.insert(plural.to_owned(), kind.to_owned());
        self.plurals.insert(kind.to_owned(), plural.to_owned());
    }

    /// The kind of a resource, guessed from the plural when nobody said.
    pub(super) fn kind_for(&self, plural: &str) -> String {
        if let Some(kind) = self.kinds.get(plural) {
            return kind.clone();
        }
        let singular = plural.strip_suffix('s').unwrap_or(plural);
        let mut chars = singular.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    /// The plural of a kind, guessed from the kind when nobody said.
    pub(super) fn plural_for(&self, kind: &str) -> String {
        if let Some(plural) = self.plurals.get(kind) {
            return plural.clone();
        }
        let lower = kind.to_lowercase();
        if let Some(stem) = lower.strip_suffix('y') {
            format!("{stem}ies")
        } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
            format!("{lower}es")
        } else {
            format!("{lower}s")
        }
    }

    /// Checks the `kind` a client sent for a resource; an unknown resource learns it.
    pub(super) fn check_kind(&mut self, res: &Res, kind: &str) -> Result<(), ApiError> {
        match self.kinds.get(&res.plural) {
            Some(expected) if expected != kind => {
                Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match the expected kind ({expected})")))
            }
            Some(_) => Ok(()),
            None => {
                self.register_kind(&res.plural, kind);
                Ok(())
            }
        }
    }

    /// A CRD written to the server declares its resource's kind and status subresource.
    pub(super) fn learn_from_crd(&mut self, res: &Res, obj: &Value) {
        if res.plural != "customresourcedefinitions" {
            return;
        }
        let names = obj.pointer("/spec/names");
        let plural = names.and_then(|n| n.get("plural")).and_then(Value::as_str);
        let kind = names.and_then(|n| n.get("kind")).and_then(Value::as_str);
        if let (Some(plural), Some(kind)) = (plural, kind) {
            self.register_kind(plural, kind);
            if obj.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster") {
                self.cluster_scoped.insert(plural.to_owned());
            }
            let versions = obj.pointer("/spec/versions").and_then(Value::as_array);
            let has_status = versions.is_some_and(|versions| versions.iter().any(|v| v.pointer("/subresources/status").is_some()));
            if has_status {
                self.status_subresources.insert(plural.to_owned());
            }
        }
    }

    pub(super) fn has_status(&self, plural: &str) -> bool {
        self.status_subresources.contains(plural)
    }

    /// Fills in a missing apiVersion/kind from the path; rejects ones that disagree with it.
    pub(super) fn check_type_meta(&mut self, t: &Target, map: &mut Map<String, Value>) -> Result<(), ApiError> {
        let expected = t.api_version();
        match map.get("apiVersion") {
            None | Some(Value::Null) => {
                map.insert("apiVersion".into(), Value::String(expected));
            }
            Some(Value::String(given)) if *given == expected => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({expected})",
                    plain(given)
                )));
            }
        }
        match map.get("kind") {
            None | Some(Value::Null) => {
                let kind = self.kind_for(&t.res.plural);
                map.insert("kind".into(), Value::String(kind));
                Ok(())
            }
            Some(Value::String(kind)) => {
                let kind = kind.clone();
                self.check_kind(&t.res, &kind)
            }
            Some(other) => Err(ApiError::bad_request(format!("invalid kind {}", plain(other)))),
        }
    }
}
