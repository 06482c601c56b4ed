//! The cluster-scoped `ClusterNavigatorToken`: one token, written to a Secret in every selected
//! namespace. Its spec reuses the NavigatorToken's parts; the controller is in
//! `controller::cluster`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{CredentialsSecretRef, NavigatorTokenStatus, Placement, Target, TokenSettings, secret_type_unchanged_rule, shared_rules};

/// Asks the operator to keep one access token in a Secret in each selected namespace, from
/// credentials that stay in the operator's own namespace.
// kube's printcolumn(...) repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "navigator.dev",
    version = "v1alpha1",
    kind = "ClusterNavigatorToken",
    shortname = "cnvt",
    status = "ClusterNavigatorTokenStatus",
    cel,
    doc = "A ClusterNavigatorToken keeps one VMware Cloud Partner Navigator or CSP access token fresh in a Secret in every selected namespace: one token request per refresh window, however many namespaces.",
    printcolumn(name = "Org", type_ = "string", json_path = ".spec.orgId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Namespaces", type_ = "integer", json_path = ".status.namespaces.selected"),
    printcolumn(name = "Written", type_ = "integer", json_path = ".status.namespaces.written"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.namespaces.failed", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    // A string, not a date: kubectl shows a date as an age, and a future time as `<invalid>`.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = shared_rules::scope_needs_csp())]
#[x_kube(validation = shared_rules::api_token_needs_csp())]
// A refresh-token chain needs a store for its newest token, which only NavigatorTokens have.
#[x_kube(validation = Rule::new("!has(self.credentialsSecretRef.refreshTokenKey)").message("credentialsSecretRef.refreshTokenKey is not supported on a ClusterNavigatorToken: use client credentials or an API token (apiTokenKey), or a NavigatorToken per namespace"))]
#[x_kube(validation = shared_rules::refresh_before_shorter_than_validity())]
#[x_kube(validation = Rule::new(secret_type_unchanged_rule()).message("target.template.type cannot change while target.secretName stays the same: the type of an existing Secret is immutable. Change secretName too, or delete and re-create the ClusterNavigatorToken"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterNavigatorTokenSpec {
    /// The token itself: org, endpoint, scope and lifetime (as in a NavigatorToken).
    #[serde(flatten)]
    pub settings: TokenSettings,
    /// Secret holding the OAuth client credentials, in a namespace the operator allows (its flag --cluster-credentials-namespace, by default the operator's own namespace). The Secret must carry the label navigator.dev/credentials=true. Tenants never see it: only the token is written to their namespaces.
    pub credentials_secret_ref: ClusterCredentialsSecretRef,
    /// The Secret the token is written to, and in which namespaces (namespaceSelector and/or namespaces).
    pub target: Box<ClusterTarget>,
    /// When true the operator stops refreshing (the current token stays in the Secrets until it expires).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// Where the OAuth client credentials are: a namespace the operator allows, and the Secret in it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterCredentialsSecretRef {
    /// Namespace of the Secret. Must be one the operator allows (--cluster-credentials-namespace, default the operator's own namespace); any other is refused with the reason CredentialsNamespaceNotAllowed.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: String,
    /// The Secret and its keys, as in a NavigatorToken.
    #[serde(flatten)]
    pub secret: CredentialsSecretRef,
}

/// The Secret the token is written to, and the namespaces it is written in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)").message("target needs namespaceSelector or namespaces (or both)"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterTarget {
    /// Namespaces whose labels match are selected; an empty selector ({}) selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces selected by name (in addition to namespaceSelector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")))]
    pub namespaces: Vec<String>,
    /// The Secret, as in a NavigatorToken's target (secretName defaults to the ClusterNavigatorToken's name). With deletionPolicy Delete (the default) each Secret has this ClusterNavigatorToken as owner, so Kubernetes deletes them all with it, and the operator deletes the Secret of a namespace that stops being selected; Retain leaves them.
    #[serde(flatten)]
    pub secret: Target,
}

/// What the operator observed and did. Never holds a token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNavigatorTokenStatus {
    /// The fields of a NavigatorToken's status, for the token shared by all namespaces. Ready is True while every selected namespace holds a valid token.
    #[serde(flatten)]
    pub token: NavigatorTokenStatus,
    /// How many namespaces are selected, hold the current token, and could not be written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceCounts>,
    /// The first few namespaces that could not be written, by namespace name, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub namespace_failures: Vec<NamespaceFailure>,
    /// The first few namespaces named in spec.target.namespaces that do not exist (namespaces.missing counts them all); each gets the Secret once it is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub missing_namespaces: Vec<String>,
}

/// Counts of the selected namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    /// Namespaces selected (existing and not being deleted).
    #[schemars(extend("format" = "int32"))]
    pub selected: u32,
    /// Selected namespaces whose Secret holds the current token.
    #[schemars(extend("format" = "int32"))]
    pub written: u32,
    /// Selected namespaces whose Secret could not be written (see namespaceFailures).
    #[schemars(extend("format" = "int32"))]
    pub failed: u32,
    /// Namespaces named in spec.target.namespaces that do not exist (see missingNamespaces).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int32"))]
    pub missing: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A namespace whose Secret could not be written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceFailure {
    /// The namespace.
    pub namespace: String,
    /// Machine-readable reason (SecretConflict, SecretQuotaExceeded, SecretWriteForbidden, ...).
    pub reason: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ClusterNavigatorToken {
    /// The target Secret name: spec.target.secretName or the ClusterNavigatorToken's own name.
    pub fn target_secret_name(&self) -> String {
        self.spec.target.secret.secret_name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// Its Secret (the same in every namespace) and itself, as the shared code reads them.
    pub fn placement(&self) -> Placement<'_> {
        Placement::of(self, Some(&self.spec.target.secret), self.target_secret_name(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::REFRESH_REQUESTED_ANNOTATION;
    use crate::crd::NavigatorToken;

    #[test]
    fn the_cached_navigator_token_stays_in_its_allocator_class() {
        // 752 bytes inline: with the Arc, mimalloc's 768-byte class (bench/RESULTS.md).
        assert!(std::mem::size_of::<NavigatorToken>() <= 752, "{}", std::mem::size_of::<NavigatorToken>());
    }

    #[test]
    fn the_placement_carries_what_the_shared_code_reads() {
        let cnvt: ClusterNavigatorToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken",
            "metadata": {"name": "vendor", "uid": "u-7", "generation": 3, "annotations": {REFRESH_REQUESTED_ANNOTATION: "now"}},
            "spec": {
                "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
                "credentialsSecretRef": {"namespace": "ops", "name": "creds", "clientIdKey": "id"},
                "target": {"namespaces": ["team-a"], "secretName": "vendor-token", "accessTokenKey": "bearer"},
            },
        }))
        .unwrap();
        let placement = cnvt.placement();
        assert_eq!((placement.name, placement.uid, placement.cluster), ("vendor", Some("u-7"), true));
        assert_eq!(placement.refresh_requested_at, Some("now"));
        assert_eq!(placement.secret_name, "vendor-token");
        assert_eq!(placement.target.access_token_key(), "bearer");
        let owner = placement.owner.unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str(), owner.controller),
            ("ClusterNavigatorToken", "vendor", "u-7", Some(true))
        );
    }
}
