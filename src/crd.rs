//! The `NavigatorToken` custom resource: what users write (spec) and what the operator reports (status).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::{CustomResource, KubeSchema, Resource};
use serde::{Deserialize, Serialize};

pub mod cluster;

pub use cluster::{ClusterNavigatorToken, ClusterNavigatorTokenSpec, ClusterNavigatorTokenStatus};

/// Default base URL of the Cloud Partner Navigator endpoint.
pub const NAVIGATOR_DEFAULT_URL: &str = "https://console.navigator.vmware.com";
/// Default base URL of the Cloud Services Platform endpoint.
pub const CSP_DEFAULT_URL: &str = "https://console.cloud.vmware.com";

/// A Go duration (`30m`, `1h30m`), as CEL's `duration()` parses it. Both the OpenAPI pattern and
/// the guard in front of each `duration()` call: CEL rules run even when the pattern fails, and an
/// unguarded `duration('30 minutes')` adds a type conversion error to the pattern's. `[.]`, not
/// `\.`: the same text is a valid CEL string literal.
pub(crate) const GO_DURATION: &str = "^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// CEL: the spec (`self`) names the CSP endpoint.
pub(crate) const IS_CSP: &str = "(has(self.endpoint) && has(self.endpoint.type) && self.endpoint.type == 'CSP')";

/// What a token is, whatever kind of object asks for it: the org, the endpoint, the scope and
/// its lifetime. Flattened into both specs; the code both kinds share reads it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TokenSettings {
    /// Organization (GUID) the token is issued for.
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"))]
    pub org_id: String,
    /// Token endpoint; default: Cloud Partner Navigator at https://console.navigator.vmware.com.
    // Boxed, as are target and status.lastFailure: usually absent, and every cached
    // NavigatorToken pays for the inline size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Box<Endpoint>>,
    /// Space-separated scopes to request (CSP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub scope: Option<Box<str>>,
    /// Requested token lifetime as a Go duration (e.g. 30m), sent as accessTokenValiditySeconds. The endpoint may grant less; default: what the OAuth client is configured for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = GO_DURATION))]
    #[x_kube(validation = shared_rules::validity_at_least_a_second())]
    pub validity: Option<Box<str>>,
    /// How long before expiry to refresh, as a Go duration; default: once 2/3 of the lifetime has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = GO_DURATION))]
    #[x_kube(validation = shared_rules::refresh_before_positive())]
    pub refresh_before: Option<Box<str>>,
}

/// Asks the operator to keep an access token for one VMware organization in a Secret.
// kube's printcolumn(...) repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "navigator.dev",
    version = "v1alpha1",
    kind = "NavigatorToken",
    namespaced,
    shortname = "nvt",
    status = "NavigatorTokenStatus",
    cel,
    doc = "A NavigatorToken keeps a VMware Cloud Partner Navigator or CSP access token fresh in a Secret.",
    printcolumn(name = "Org", type_ = "string", json_path = ".spec.orgId"),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    // A string, not a date: kubectl shows a date as an age, and a future time as `<invalid>`.
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = shared_rules::scope_needs_csp())]
#[x_kube(validation = shared_rules::api_token_needs_csp())]
#[x_kube(validation = Rule::new(format!("!has(self.credentialsSecretRef.refreshTokenKey) || {IS_CSP}")).message("credentialsSecretRef.refreshTokenKey needs endpoint.type CSP: the refresh-token grant is CSP's"))]
#[x_kube(validation = shared_rules::refresh_before_shorter_than_validity())]
#[x_kube(validation = Rule::new(secret_type_unchanged_rule()).message("target.template.type cannot change while target.secretName stays the same: the type of an existing Secret is immutable. Change secretName too, or delete and re-create the NavigatorToken"))]
#[serde(rename_all = "camelCase")]
pub struct NavigatorTokenSpec {
    /// The token itself: org, endpoint, scope and lifetime (shared with ClusterNavigatorTokens).
    #[serde(flatten)]
    pub settings: TokenSettings,
    /// Secret in this NavigatorToken's namespace holding the credentials: OAuth client credentials (default), a CSP API token (apiTokenKey) or client credentials with a refresh token (refreshTokenKey). The Secret must carry the label navigator.dev/credentials=true; the operator only reads it.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// The Secret the token is written to; default: a Secret named like this NavigatorToken with the key token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<Target>>,
    /// When true the operator stops refreshing (the current token stays until it expires).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Workloads in this namespace whose pods read the token only at start (for example from an environment variable): after each new token is stored, the operator sets the annotation navigator.dev/restarted-at on their pod template, so they roll. Needs the opt-in RBAC component deploy/components/rollout-restart.
    // Boxed: rarely set, and every cached NavigatorToken pays for the inline size (at 784
    // bytes inline it moved to the allocator's next size class: +1.2 MiB at 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Option<Box<RolloutTargets>>,
}

/// The list of [`RolloutTarget`]s (a newtype so that it can be boxed as one allocation).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(transparent)]
pub struct RolloutTargets(pub Vec<RolloutTarget>);

/// A workload to restart after each new token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: RolloutKind,
    /// Its name, in the NavigatorToken's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// The workload kinds a rollout restart applies to (API group apps/v1).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

/// The Secret's shape for its consumers: more keys rendered from templates, its type, metadata.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// The Secret type; default Opaque (e.g. kubernetes.io/dockerconfigjson). The type of an existing Secret cannot change.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9/]+$"))]
    pub type_: Option<String>,
    /// Keys rendered from templates, written next to the raw token. Jinja-like syntax: {{ accessToken }}, {{ expiresAt | tojson }}, {% if idToken %}...{% endif %}. Variables: accessToken, idToken ("" when none), tokenType (Bearer), issuedAt and expiresAt (RFC 3339), issuedAtUnix and expiresAtUnix (Unix seconds), orgId, scope ("" when none), name and namespace (of this NavigatorToken). Filters: tojson, b64encode, upper, lower, trim. Only {{ and {% start a tag: }}}, %} and {# are text. No loops, arithmetic, file or network access; blocks nest at most 8 deep, each rendered value is at most 64 KiB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "template_data_schema")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))").message("template.data keys must be valid Secret keys: letters, digits, '-', '_' and '.'"))]
    pub data: BTreeMap<String, String>,
    /// Labels and annotations merged into the Secret's, like target.labels and target.annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
}

/// Labels and annotations of a [`SecretTemplate`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels merged into the Secret's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations merged into the Secret's annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `template.data`: at most 32 keys of at most 16 KiB of template text each (bounds the work and
/// the CEL cost of the key rule).
fn template_data_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 16384}})
}

/// CEL: the Secret type a spec (`self` or `oldSelf`) asks for, defaulted.
fn template_type(spec: &str) -> String {
    format!(
        "(has({spec}.target) && has({spec}.target.template) && has({spec}.target.template.type) ? {spec}.target.template.type : 'Opaque')"
    )
}

/// CEL: the target Secret name a spec asks for ('' for the default, the object's name).
fn secret_name(spec: &str) -> String {
    format!("(has({spec}.target) && has({spec}.target.secretName) ? {spec}.target.secretName : '')")
}

/// A transition rule: the Secret type changes only together with the Secret's name.
pub(crate) fn secret_type_unchanged_rule() -> String {
    format!("{} == {} || {} != {}", template_type("self"), template_type("oldSelf"), secret_name("self"), secret_name("oldSelf"))
}

/// Where the credentials are: OAuth client credentials (the default), a CSP API token
/// (`apiTokenKey`), or OAuth client credentials with a refresh token (`refreshTokenKey`).
/// Same namespace only: there is deliberately no namespace field.
// Keys are Box<str>: every cached NavigatorToken pays for the inline size (see the size test).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.apiTokenKey) || !(has(self.clientIdKey))").message("credentialsSecretRef.apiTokenKey and credentialsSecretRef.clientIdKey cannot be used together: an API token is exchanged on its own, without OAuth client credentials"))]
#[x_kube(validation = Rule::new("!has(self.apiTokenKey) || !(has(self.clientSecretKey))").message("credentialsSecretRef.apiTokenKey and credentialsSecretRef.clientSecretKey cannot be used together: an API token is exchanged on its own, without OAuth client credentials"))]
#[x_kube(validation = Rule::new("!has(self.apiTokenKey) || !(has(self.publicClient) && self.publicClient)").message("credentialsSecretRef.apiTokenKey and credentialsSecretRef.publicClient cannot be used together: an API token is exchanged on its own, without OAuth client credentials"))]
#[x_kube(validation = Rule::new("!has(self.apiTokenKey) || !(has(self.refreshTokenKey))").message("credentialsSecretRef.apiTokenKey and credentialsSecretRef.refreshTokenKey cannot be used together: an API token is exchanged on its own, without OAuth client credentials"))]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key holding the client id; default client_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id_key: Option<Box<str>>,
    /// Key holding the client secret; default client_secret. Ignored for a public client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_secret_key: Option<Box<str>>,
    /// True for a public OAuth client: sends base64(client_id:) with an empty secret.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_client: bool,
    /// Key holding a CSP API token (for example api_token). When set, the operator exchanges the API token at CSP's api-tokens/authorize endpoint instead of using client credentials. Needs endpoint.type CSP; excludes clientIdKey, clientSecretKey, publicClient and refreshTokenKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub api_token_key: Option<Box<str>>,
    /// Key holding an OAuth refresh token, used with the client credentials (grant_type=refresh_token). Needs endpoint.type CSP. When CSP returns a new refresh token the operator keeps it in its own Secret <name>-refresh-token (never in this Secret); a new value pasted here replaces that chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub refresh_token_key: Option<Box<str>>,
}

/// Which token endpoint to call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.caBundle) || !has(self.url) || self.url.startsWith('https://')").message("caBundle needs an https url"))]
#[x_kube(validation = Rule::new("!has(self.url) || self.url.startsWith('https://') || self.url.matches('^http://(127\\\\.[0-9]+\\\\.[0-9]+\\\\.[0-9]+|localhost|\\\\[::1\\\\])(:[0-9]+)?(/.*)?$')").message("url must be https (plain http is allowed only for loopback hosts, for testing)"))]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Navigator or CSP; default Navigator. Navigator: Cloud Partner Navigator authorize API; CSP: Cloud Services Platform OAuth token API.
    // Defaulted by the API server too; still an Option, for objects stored before the default.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "endpoint_type_schema")]
    pub type_: Option<EndpointType>,
    /// Base URL (scheme and host, optional port and path prefix); default per type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^/?#\s@]+(/[^?#\s]*)?$"))]
    pub url: Option<String>,
    /// PEM certificates to trust in addition to the public roots (private CA or proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    #[x_kube(validation = Rule::new("self == '' || self.contains('-----BEGIN CERTIFICATE-----')").message("caBundle must be PEM certificates"))]
    pub ca_bundle: Option<String>,
}

/// The two VMware token endpoint flavours.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum EndpointType {
    /// Cloud Partner Navigator `POST /cphub/api/auth/v2/authn/authorize`.
    #[default]
    Navigator,
    /// Cloud Services Platform `POST /csp/gateway/am/api/auth/token`.
    #[serde(rename = "CSP")]
    Csp,
}

/// The Secret the token is written to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.idTokenKey) || self.idTokenKey != (has(self.accessTokenKey) ? self.accessTokenKey : 'token')").message("idTokenKey must differ from accessTokenKey"))]
#[x_kube(validation = Rule::new("!has(self.expiresAtKey) || (self.expiresAtKey != (has(self.accessTokenKey) ? self.accessTokenKey : 'token') && (!has(self.idTokenKey) || self.expiresAtKey != self.idTokenKey))").message("expiresAtKey must differ from the token keys"))]
#[x_kube(validation = Rule::new("!has(self.template) || !has(self.template.data) || (!((has(self.accessTokenKey) ? self.accessTokenKey : 'token') in self.template.data) && (!has(self.idTokenKey) || !(self.idTokenKey in self.template.data)) && (!has(self.expiresAtKey) || !(self.expiresAtKey in self.template.data)))").message("template.data keys must differ from accessTokenKey, idTokenKey and expiresAtKey"))]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Secret name; default: the NavigatorToken's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret_name: Option<String>,
    /// Key for the access token; default token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub access_token_key: Option<String>,
    /// Also write the id token under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub id_token_key: Option<String>,
    /// Also write the expiry (RFC 3339) under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub expires_at_key: Option<String>,
    /// Labels merged into the Secret's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations merged into the Secret's annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Delete or Retain; default Delete. Delete: the Secret is garbage-collected with the NavigatorToken; Retain: it is left behind.
    // Defaulted by the API server too; still an Option, for objects stored before the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "deletion_policy_schema")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// More keys rendered from templates, the Secret type, and more metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplate>,
}

/// What happens to the Secret when the NavigatorToken is deleted.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Owner reference: Kubernetes deletes the Secret with the NavigatorToken.
    #[default]
    Delete,
    /// No owner reference: the Secret stays.
    Retain,
}

/// Which Secret a token is written to and for whom: what shaping and judging that Secret read
/// besides the [`TokenSettings`] and the namespace. Each kind builds it from its own object
/// (`placement()`), so the shared code knows neither kind.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    /// The target Secret's spec: keys, labels, annotations, template, deletion policy.
    pub target: Cow<'a, Target>,
    /// The Secret's name: target.secretName, else the object's name.
    pub secret_name: String,
    /// The object's name (the Secret's name annotation, the template's `name`).
    pub name: &'a str,
    /// The object's uid: under deletionPolicy Delete, the owner a current Secret has.
    pub uid: Option<&'a str>,
    /// The owner reference the Secret gets under deletionPolicy Delete.
    pub owner: Option<OwnerReference>,
    /// Written for a ClusterNavigatorToken: the Secret carries the cluster-token label, and
    /// each kind's Secrets are foreign to the other.
    pub cluster: bool,
    /// The object's refresh-requested-at annotation: a new value asks for a new token.
    pub refresh_requested_at: Option<&'a str>,
}

impl<'a> Placement<'a> {
    /// The placement of `object`'s Secret under `target` (defaults when absent).
    fn of<K: Resource<DynamicType = ()>>(object: &'a K, target: Option<&'a Target>, secret_name: String, cluster: bool) -> Self {
        let meta = object.meta();
        Placement {
            target: target.map_or_else(|| Cow::Owned(Target::default()), Cow::Borrowed),
            secret_name,
            name: meta.name.as_deref().unwrap_or_default(),
            uid: meta.uid.as_deref(),
            owner: object.controller_owner_ref(&()),
            cluster,
            refresh_requested_at: meta.annotations.as_ref().and_then(|a| a.get(crate::REFRESH_REQUESTED_ANNOTATION)).map(String::as_str),
        }
    }
}

/// What the operator observed and did. Never holds a token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NavigatorTokenStatus {
    /// Ready: the Secret holds a valid token for the current spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Secret that holds (or is to hold) the token; set from the first reconcile on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the current token was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// When the current token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The lifetime the endpoint granted the current token (expiresAt - issuedAt, e.g. `30m`).
    /// Shorter than spec.validity when the endpoint caps it (CSP caps it at the OAuth client's
    /// own token TTL); the Ready message says when spec.refreshBefore then no longer fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_lifetime: Option<Box<str>>,
    /// When the operator will next request a token (refresh or retry) (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_at: Option<String>,
    /// Failed attempts since the last success.
    // "int32": Kubernetes knows no "uint32" and warns about it at every CRD apply.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int32"))]
    pub consecutive_failures: u32,
    /// The most recent failure, kept until the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Box<Failure>>,
    /// Opaque fingerprint of the inputs the last token was issued, or last attempted, from: the spec fields the token depends on, a fingerprint of the credential values, and the navigator.dev/refresh-requested-at annotation. For change detection only (a change requests a new token at once); no value can be recovered from it.
    // Box<str>, as granted_lifetime: 8 bytes less per cached NavigatorToken than a String.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_fingerprint: Option<Box<str>>,
    /// What the operator knows about the credentials themselves (CSP API tokens: their own expiry).
    // Boxed: set only for API tokens, and every cached NavigatorToken pays for the inline size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Box<CredentialsStatus>>,
}

/// The credentials' own state, as far as the endpoint tells it. Never holds a credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsStatus {
    /// When the CSP API token itself expires (RFC 3339), from CSP's api-tokens/details. Absent when it never expires or is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_expires_at: Option<String>,
    /// True when CSP reports that the API token never expires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_token_never_expires: bool,
    /// When the operator last asked CSP about the API token (RFC 3339); it asks once per credentials change and at most daily.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_checked_at: Option<String>,
    /// Opaque fingerprint of the credential values that were checked (a change checks again at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_fingerprint: Option<String>,
}

/// A failed attempt, as reported to users.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// When it happened (RFC 3339).
    pub time: String,
    /// Machine-readable reason (also the Ready condition's reason).
    pub reason: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

/// `endpoint.type`'s schema: the enum with its default (not `Option`'s nullable enum).
fn endpoint_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_with_default(&[EndpointType::Navigator, EndpointType::Csp], EndpointType::default())
}

/// `target.deletionPolicy`'s schema: the enum with its default (not `Option`'s nullable enum).
fn deletion_policy_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    enum_with_default(&[DeletionPolicy::Delete, DeletionPolicy::Retain], DeletionPolicy::default())
}

/// A string enum whose default the API server fills in. A default must not be nullable: the API
/// server would keep an explicit null instead of defaulting it.
fn enum_with_default<T: Serialize>(values: &[T], default: T) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": values, "default": default})
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TokenSettings {
    /// The endpoint flavour, defaulted.
    pub fn endpoint_type(&self) -> EndpointType {
        self.endpoint.as_ref().and_then(|e| e.type_).unwrap_or_default()
    }

    /// The endpoint base URL, defaulted per flavour, without a trailing slash.
    pub fn endpoint_url(&self) -> String {
        let url = self.endpoint.as_ref().and_then(|e| e.url.clone()).unwrap_or_else(|| {
            match self.endpoint_type() {
                EndpointType::Navigator => NAVIGATOR_DEFAULT_URL,
                EndpointType::Csp => CSP_DEFAULT_URL,
            }
            .to_owned()
        });
        url.trim_end_matches('/').to_owned()
    }

    /// Extra CA certificates, if any.
    pub fn ca_bundle(&self) -> Option<&str> {
        self.endpoint.as_ref().and_then(|e| e.ca_bundle.as_deref()).filter(|b| !b.trim().is_empty())
    }
}

impl NavigatorTokenSpec {
    /// The workloads to restart after each new token (none when absent).
    pub fn rollout_targets(&self) -> &[RolloutTarget] {
        self.rollout_restart_targets.as_deref().map_or(&[], |targets| targets.0.as_slice())
    }

    /// The target Secret's settings (defaults when absent).
    pub fn target(&self) -> Target {
        self.target.as_deref().cloned().unwrap_or_default()
    }
}

impl Target {
    /// The key the access token is written under.
    pub fn access_token_key(&self) -> &str {
        self.access_token_key.as_deref().unwrap_or("token")
    }
}

impl CredentialsSecretRef {
    /// The key holding the client id.
    pub fn client_id_key(&self) -> &str {
        self.client_id_key.as_deref().unwrap_or("client_id")
    }

    /// The key holding the client secret.
    pub fn client_secret_key(&self) -> &str {
        self.client_secret_key.as_deref().unwrap_or("client_secret")
    }

    /// The kind of credentials the reference names.
    pub fn kind(&self) -> CredentialKind {
        if self.api_token_key.is_some() {
            CredentialKind::ApiToken
        } else if self.refresh_token_key.is_some() {
            CredentialKind::RefreshToken
        } else {
            CredentialKind::ClientCredentials
        }
    }
}

/// The credential kinds a [`CredentialsSecretRef`] can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// OAuth client id and secret (client_credentials grant).
    ClientCredentials,
    /// A CSP API token, exchanged at api-tokens/authorize.
    ApiToken,
    /// OAuth client credentials and a refresh token (refresh_token grant).
    RefreshToken,
}

impl NavigatorToken {
    /// The target Secret name: spec.target.secretName or the NavigatorToken's own name.
    pub fn target_secret_name(&self) -> String {
        self.spec.target.as_ref().and_then(|t| t.secret_name.clone()).unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// Its Secret and itself, as the shared code reads them.
    pub fn placement(&self) -> Placement<'_> {
        Placement::of(self, self.spec.target.as_deref(), self.target_secret_name(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The controller caches every NavigatorToken in an Arc: 752 bytes inline plus the Arc's
    /// counts is mimalloc's 768-byte class; one byte more costs the next class (bench/RESULTS.md).
    #[test]
    fn the_cached_navigator_token_stays_in_its_allocator_size_class() {
        assert!(std::mem::size_of::<NavigatorToken>() <= 752, "{} bytes", std::mem::size_of::<NavigatorToken>());
    }
}

/// The spec rules both kinds share (a NavigatorToken's and a ClusterNavigatorToken's spec).
mod shared_rules {
    use kube::core::Rule;

    use super::{GO_DURATION, IS_CSP};

    /// `scope` only with CSP.
    pub(super) fn scope_needs_csp() -> Rule {
        Rule::new(format!("!has(self.scope) || {IS_CSP}")).message("scope is supported only with endpoint.type CSP")
    }

    /// `apiTokenKey` only with CSP.
    pub(super) fn api_token_needs_csp() -> Rule {
        Rule::new(format!("!has(self.credentialsSecretRef.apiTokenKey) || {IS_CSP}"))
            .message("credentialsSecretRef.apiTokenKey needs endpoint.type CSP: API tokens are exchanged at CSP only")
    }

    /// `refreshBefore` < `validity`.
    pub(super) fn refresh_before_shorter_than_validity() -> Rule {
        Rule::new(format!("!has(self.refreshBefore) || !has(self.validity) || !self.refreshBefore.matches('{GO_DURATION}') || !self.validity.matches('{GO_DURATION}') || duration(self.refreshBefore) < duration(self.validity)")).message("refreshBefore must be shorter than validity")
    }

    /// `validity` at least 1s.
    pub(super) fn validity_at_least_a_second() -> Rule {
        Rule::new(format!("!self.matches('{GO_DURATION}') || duration(self) >= duration('1s')")).message("validity must be at least 1s")
    }

    /// `refreshBefore` > 0.
    pub(super) fn refresh_before_positive() -> Rule {
        Rule::new(format!("!self.matches('{GO_DURATION}') || duration(self) > duration('0s')")).message("refreshBefore must be positive")
    }
}
