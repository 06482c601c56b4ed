//! The target Secret: what it should contain, and what the one in the cache tells us.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::watcher;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::plan::{CurrentToken, TargetSecret};
use super::status::rfc3339;
use crate::crd::{CredentialsSecretRef, DeletionPolicy, Placement, Target, TokenSettings};
use crate::redact::Sensitive;
use crate::template::{self, TemplateError};
use crate::token::ClientOptions;
use crate::{
    CLUSTER_TOKEN_LABEL, EXPIRES_AT_ANNOTATION, INPUTS_FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    TOKEN_FINGERPRINT_ANNOTATION, TOKEN_NAME_ANNOTATION,
};

/// Annotation: fingerprint of the non-token parts of the Secret (labels, annotations, owner).
pub const TEMPLATE_FINGERPRINT_ANNOTATION: &str = "navigator.dev/template-sha256";
/// Annotation: fingerprint of all data the operator wrote, so that an edit of a rendered key is
/// noticed (and repaired with the same token) without caching any value.
pub const DATA_FINGERPRINT_ANNOTATION: &str = "navigator.dev/data-sha256";

/// The token material written to a Secret.
#[derive(Clone, Debug)]
pub struct TokenMaterial {
    /// Access token.
    pub access_token: Sensitive,
    /// Id token, when issued.
    pub id_token: Option<Sensitive>,
    /// Issue and expiry time.
    pub times: TokenTimes,
}

/// Issue and expiry time of the token in a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenTimes {
    /// Issue time.
    pub issued_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

impl From<&CurrentToken> for TokenTimes {
    fn from(current: &CurrentToken) -> Self {
        TokenTimes { issued_at: current.issued_at, expires_at: current.expires_at }
    }
}

/// Short hex SHA-256, for annotations: enough to notice a change, nothing to recover a value from.
pub fn fingerprint(bytes: &[u8]) -> String {
    short_hex(&Sha256::digest(bytes))
}

/// The first 16 bytes of a digest in hex: the form of every fingerprint annotation.
fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Fingerprint of the credential values a token is requested with (the keys the spec names, and
/// their values): a rotation changes it, an edit of the Secret's labels or annotations does not.
pub fn credentials_fingerprint(values: &[(&str, &str)]) -> String {
    fingerprint(json!(values).to_string().as_bytes())
}

/// Fingerprint of everything a token depends on: its settings, the credentials (`credentials`
/// names them, `credentials_fp` is their values'), the Secret's name and keys, the refresh
/// request. A change means a new token.
pub fn inputs_fingerprint(settings: &TokenSettings, credentials: &CredentialsSecretRef, credentials_fp: &str, place: &Placement) -> String {
    let target = &place.target;
    let inputs = json!({
        "orgId": settings.org_id,
        "endpointType": settings.endpoint_type(),
        "url": settings.endpoint_url(),
        "caBundle": settings.ca_bundle(),
        "scope": settings.scope,
        "validity": settings.validity,
        "credentialsSecretRef": credentials,
        "credentials": credentials_fp,
        "secretName": place.secret_name,
        "keys": [target.access_token_key(), target.id_token_key, target.expires_at_key],
        "refreshRequestedAt": place.refresh_requested_at,
    });
    fingerprint(inputs.to_string().as_bytes())
}

/// Fingerprint of the operator settings a token request depends on (allowed hosts, timeouts,
/// body limit, proxy): a failure recorded under other settings is retried at once after a restart.
pub fn settings_fingerprint(options: &ClientOptions) -> String {
    let mut settings = json!({
        "allowedHosts": options.allowed_hosts,
        "connectTimeoutMs": options.connect_timeout.as_millis() as u64,
        "requestTimeoutMs": options.request_timeout.as_millis() as u64,
        "maxBodyBytes": options.max_body_bytes,
    });
    // Only when set: without a proxy the fingerprint stays what earlier releases stored. The
    // text leaves the proxy's password out: this fingerprint reaches `status.inputsFingerprint`
    // (through `attempt_fingerprint`), which tenants read, and an unsalted hash of a password
    // can be guessed offline. Nothing else here is secret.
    if let Some(proxy) = &options.proxy {
        settings["proxy"] = json!(proxy.settings_text());
    }
    fingerprint(settings.to_string().as_bytes())
}

/// Fingerprint of an attempt: its inputs and the operator settings. Status keeps it after a
/// failure; the backoff holds only while it is unchanged.
pub fn attempt_fingerprint(inputs_fp: &str, settings_fp: &str) -> String {
    fingerprint(format!("{inputs_fp}/{settings_fp}").as_bytes())
}

/// Fingerprint of the Secret's non-token parts; a change means a rewrite with the same token.
pub fn template_fingerprint(place: &Placement) -> String {
    let target = &place.target;
    let mut parts = json!({
        "labels": target.labels,
        "annotations": target.annotations,
        "retain": target.deletion_policy == Some(DeletionPolicy::Retain),
        "uid": place.uid,
    });
    // Only when set, so that Secrets written before templates existed stay current.
    if let Some(template) = &target.template {
        parts["template"] = json!(template);
    }
    fingerprint(parts.to_string().as_bytes())
}

/// Fingerprint of a Secret's data, keys and values in order.
fn data_fingerprint(data: &BTreeMap<String, ByteString>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.0.len() as u64).to_be_bytes());
        hasher.update(&value.0);
    }
    short_hex(&hasher.finalize())
}

/// The Secret as the operator wants it in `namespace`, for server-side apply: the raw token
/// keys, the keys rendered from `spec.target.template`, its type and metadata.
pub fn desired(
    settings: &TokenSettings,
    place: &Placement,
    namespace: &str,
    material: &TokenMaterial,
    inputs_fp: &str,
) -> Result<Secret, TemplateError> {
    let target = &place.target;
    let template = target.template.clone().unwrap_or_default();
    let template_metadata = template.metadata.unwrap_or_default();
    let mut labels = target.labels.clone();
    labels.extend(template_metadata.labels);
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    // Marks a ClusterNavigatorToken's Secret: foreign to every NavigatorToken (see `written_for`).
    if place.cluster {
        labels.insert(CLUSTER_TOKEN_LABEL.into(), label_value(place.name));
    }
    let data = desired_data(settings, place, namespace, material)?;
    let mut annotations = target.annotations.clone();
    annotations.extend(template_metadata.annotations);
    annotations.extend([
        (TOKEN_NAME_ANNOTATION.to_owned(), place.name.to_owned()),
        (ISSUED_AT_ANNOTATION.to_owned(), rfc3339(material.times.issued_at)),
        (EXPIRES_AT_ANNOTATION.to_owned(), rfc3339(material.times.expires_at)),
        (TOKEN_FINGERPRINT_ANNOTATION.to_owned(), fingerprint(material.access_token.expose().as_bytes())),
        (INPUTS_FINGERPRINT_ANNOTATION.to_owned(), inputs_fp.to_owned()),
        (TEMPLATE_FINGERPRINT_ANNOTATION.to_owned(), template_fingerprint(place)),
        (DATA_FINGERPRINT_ANNOTATION.to_owned(), data_fingerprint(&data)),
    ]);
    let owner_references = match target.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => place.owner.clone().map(|r| vec![r]),
        DeletionPolicy::Retain => None,
    };
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(place.secret_name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        type_: Some(template.type_.unwrap_or_else(|| "Opaque".into())),
        data: Some(data),
        ..Secret::default()
    })
}

/// The cluster-token label's value: the name, cut to the 63 characters a label value may have
/// (the name annotation carries it whole).
fn label_value(name: &str) -> String {
    name.chars().take(63).collect::<String>().trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// The data of the Secret `desired` writes: the raw token keys and the rendered template keys.
fn desired_data(
    settings: &TokenSettings,
    place: &Placement,
    namespace: &str,
    material: &TokenMaterial,
) -> Result<BTreeMap<String, ByteString>, TemplateError> {
    let target = &place.target;
    let mut data = BTreeMap::new();
    data.insert(target.access_token_key().to_owned(), ByteString(material.access_token.expose().as_bytes().to_vec()));
    if let (Some(key), Some(id_token)) = (&target.id_token_key, &material.id_token) {
        data.insert(key.clone(), ByteString(id_token.expose().as_bytes().to_vec()));
    }
    if let Some(key) = &target.expires_at_key {
        data.insert(key.clone(), ByteString(rfc3339(material.times.expires_at).into_bytes()));
    }
    let Some(template) = target.template.as_ref().filter(|t| !t.data.is_empty()) else { return Ok(data) };
    let variables = template::Variables {
        access_token: material.access_token.expose(),
        id_token: material.id_token.as_ref().map_or("", Sensitive::expose),
        issued_at: material.times.issued_at,
        expires_at: material.times.expires_at,
        org_id: &settings.org_id,
        scope: settings.scope.as_deref().unwrap_or_default(),
        name: place.name,
        namespace,
    };
    let rendered = template::render_all(&template.data, &variables)?;
    data.extend(rendered.into_iter().map(|(key, text)| (key, ByteString(text.into_bytes()))));
    Ok(data)
}

/// Fingerprint of the data `desired` would write for `material` in `namespace`: what a Secret
/// holding exactly that token has (see [`CachedSecret::holds_data`]). Computed from the token
/// the operator trusts, never from annotations someone else could have written.
pub fn expected_data_fingerprint(
    settings: &TokenSettings,
    place: &Placement,
    namespace: &str,
    material: &TokenMaterial,
) -> Result<u128, TemplateError> {
    let data = desired_data(settings, place, namespace, material)?;
    Ok(fingerprint_number(&data_fingerprint(&data)).unwrap_or_default())
}

/// True when the Secret was written by this operator for the object of `place` (of its kind).
pub fn is_ours(secret: &Secret, place: &Placement) -> bool {
    let written_for = if place.cluster { written_for_cluster(secret) } else { written_for(secret) };
    written_for == Some(place.name)
}

/// True when the Secret carries this operator's label: the label of every Secret it writes, and
/// the selector of its managed-Secret watch.
pub fn carries_managed_label(secret: &Secret) -> bool {
    secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The NavigatorToken a Secret carrying this operator's label was written for (none when it was
/// written for a ClusterNavigatorToken).
fn written_for(secret: &Secret) -> Option<&str> {
    let labelled = carries_managed_label(secret);
    let namespaced = !secret.labels().contains_key(CLUSTER_TOKEN_LABEL);
    (labelled && namespaced).then(|| secret.annotations().get(TOKEN_NAME_ANNOTATION).map(String::as_str)).flatten()
}

/// The ClusterNavigatorToken a Secret carrying this operator's label was written for: the
/// name annotation, on a Secret with the cluster-token label (whose value may be cut short).
pub fn written_for_cluster(secret: &Secret) -> Option<&str> {
    let labelled = carries_managed_label(secret);
    let cluster = secret.labels().contains_key(CLUSTER_TOKEN_LABEL);
    (labelled && cluster).then(|| secret.annotations().get(TOKEN_NAME_ANNOTATION).map(String::as_str)).flatten()
}

/// What the cache keeps of a Secret this operator manages: only what `observe` reads, taken
/// from the Secret once, as the watch decodes it. It holds no token, and costs a few hundred
/// bytes where a whole `Secret` (label, annotation and data maps, owner reference) cost 2 KiB.
#[derive(Clone, Debug)]
pub struct CachedSecret {
    /// metadata.resourceVersion.
    pub resource_version: Box<str>,
    /// The NavigatorToken (or, with `cluster`, ClusterNavigatorToken) it was written for
    /// (`None` when the label or annotation is missing).
    pub token_name: Option<Box<str>>,
    /// Written for a ClusterNavigatorToken (label navigator.dev/cluster-token): foreign to every
    /// NavigatorToken. One byte, in what was padding.
    pub cluster: bool,
    /// Issue and expiry time of the token it holds.
    pub times: Option<TokenTimes>,
    /// The inputs fingerprint annotation, as a number (16 bytes, no allocation).
    inputs_fingerprint: Option<u128>,
    /// The template fingerprint annotation, as a number.
    template_fingerprint: Option<u128>,
    /// uids of its owners.
    owner_uids: Box<[Box<str>]>,
    /// Data keys whose value matches the token fingerprint annotation: where an intact token is.
    intact_keys: Box<[Box<str>]>,
    /// The data matches its fingerprint annotation (or predates it): no key was edited.
    data_intact: bool,
    /// Fingerprint of the data as it is (computed here, not read from an annotation).
    data_fingerprint: Option<u128>,
}

/// A managed Secret as its watch decodes it: the object's identity, and the rest already
/// reduced to a [`CachedSecret`].
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Secret")]
pub struct ManagedSecret {
    /// Name, namespace and resourceVersion; nothing else is kept.
    metadata: ObjectMeta,
    /// What the cache keeps.
    pub cached: CachedSecret,
}

impl From<Secret> for ManagedSecret {
    fn from(secret: Secret) -> Self {
        let annotation = |key: &str| secret.annotations().get(key).and_then(|hex| fingerprint_number(hex));
        let intact_keys = secret.data.iter().flatten().filter(|(_, value)| is_recorded_token(&secret, &value.0));
        let actual_data = secret.data.as_ref().map(data_fingerprint);
        let cached = CachedSecret {
            resource_version: secret.metadata.resource_version.as_deref().unwrap_or_default().into(),
            token_name: written_for(&secret).or_else(|| written_for_cluster(&secret)).map(Into::into),
            cluster: written_for_cluster(&secret).is_some(),
            times: times(&secret),
            inputs_fingerprint: annotation(INPUTS_FINGERPRINT_ANNOTATION),
            template_fingerprint: annotation(TEMPLATE_FINGERPRINT_ANNOTATION),
            owner_uids: secret.owner_references().iter().map(|r| r.uid.as_str().into()).collect(),
            intact_keys: intact_keys.map(|(key, _)| key.as_str().into()).collect(),
            data_intact: secret
                .annotations()
                .get(DATA_FINGERPRINT_ANNOTATION)
                .is_none_or(|recorded| Some(recorded) == actual_data.as_ref()),
            data_fingerprint: actual_data.as_deref().and_then(fingerprint_number),
        };
        let metadata = ObjectMeta {
            name: secret.metadata.name,
            namespace: secret.metadata.namespace,
            resource_version: secret.metadata.resource_version,
            ..ObjectMeta::default()
        };
        ManagedSecret { metadata, cached }
    }
}

watched_as_secret!(ManagedSecret);

/// The cache of managed Secrets by namespace and name. kube's reflector `Store` would keep a
/// whole `ObjectMeta` (360 bytes) and a keyed copy of name and resourceVersion with each entry:
/// a few MiB more heap at 10,000 NavigatorTokens (bench/RESULTS.md). Entries are boxed: the
/// table keeps room for up to twice as many entries as it holds, and a slot of a key and a box
/// is 40 bytes where a `CachedSecret` is over 200.
#[derive(Clone, Default)]
pub struct SecretCache(Arc<RwLock<HashMap<SecretKey, Box<CachedSecret>>>>);

/// A Secret's namespace and name.
type SecretKey = (Box<str>, Box<str>);

impl SecretCache {
    /// The cached Secret `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<CachedSecret> {
        let entries = self.0.read().unwrap_or_else(|p| p.into_inner());
        entries.get(&(namespace.into(), name.into())).map(|cached| (**cached).clone())
    }

    /// The cached Secrets written for ClusterNavigatorToken `name`, as (namespace, Secret name,
    /// cached). Walks the whole cache: called once per reconcile of a ClusterNavigatorToken.
    pub fn cluster_secrets(&self, name: &str) -> Vec<(String, String, CachedSecret)> {
        let entries = self.0.read().unwrap_or_else(|p| p.into_inner());
        let ours = entries.iter().filter(|(_, c)| c.cluster && c.token_name.as_deref() == Some(name));
        ours.map(|((ns, secret), c)| (ns.to_string(), secret.to_string(), (**c).clone())).collect()
    }

    /// A handler of the Secrets' watch events that keeps the cache as kube's reflector keeps a
    /// `Store`: a (re)list is collected aside and replaces the whole cache once complete.
    pub fn writer(&self) -> impl FnMut(&watcher::Event<ManagedSecret>) + use<> {
        let cache = self.0.clone();
        let mut relist = HashMap::new();
        let key = |s: &ManagedSecret| -> SecretKey { (s.namespace().unwrap_or_default().into(), s.name_any().into()) };
        move |event| {
            let write = || cache.write().unwrap_or_else(|p| p.into_inner());
            match event {
                watcher::Event::Init => relist = HashMap::new(),
                watcher::Event::InitApply(s) => drop(relist.insert(key(s), Box::new(s.cached.clone()))),
                watcher::Event::InitDone => *write() = std::mem::take(&mut relist),
                watcher::Event::Apply(s) => drop(write().insert(key(s), Box::new(s.cached.clone()))),
                watcher::Event::Delete(s) => drop(write().remove(&key(s))),
            }
        }
    }
}

/// Classifies the cached Secret under the target name: the other kind's Secrets are foreign.
pub fn observe(secret: Option<&CachedSecret>, place: &Placement, inputs_fp: &str) -> TargetSecret {
    let Some(secret) = secret else {
        return TargetSecret::Absent;
    };
    if secret.cluster != place.cluster || secret.token_name.as_deref() != Some(place.name) {
        return TargetSecret::Foreign;
    }
    let Some(TokenTimes { issued_at, expires_at }) = secret.times else {
        return TargetSecret::Managed(None);
    };
    let target = &place.target;
    let owner_ok = match target.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => place.uid.is_some_and(|uid| secret.owned_by(uid)),
        DeletionPolicy::Retain => true,
    };
    let current = |cached: Option<u128>, wanted: &str| cached.is_some() && cached == fingerprint_number(wanted);
    TargetSecret::Managed(Some(CurrentToken {
        issued_at,
        expires_at,
        intact: secret.intact_keys.iter().any(|key| &**key == target.access_token_key()),
        inputs_current: current(secret.inputs_fingerprint, inputs_fp),
        template_current: owner_ok && secret.data_intact && current(secret.template_fingerprint, &template_fingerprint(place)),
    }))
}

impl CachedSecret {
    /// True when `uid` is among its owners.
    pub fn owned_by(&self, uid: &str) -> bool {
        self.owner_uids.iter().any(|owner| &**owner == uid)
    }

    /// True when its data is exactly the data of [`expected_data_fingerprint`]: the check that
    /// annotations cannot fake, since the fingerprint is taken of the data itself.
    pub fn holds_data(&self, expected: u128) -> bool {
        self.data_fingerprint == Some(expected)
    }

    /// True when its data was edited since the operator wrote it (the data fingerprint
    /// annotation no longer matches).
    pub fn data_edited(&self) -> bool {
        !self.data_intact
    }
}

/// A [`fingerprint`] as the number its hex digits spell.
fn fingerprint_number(hex: &str) -> Option<u128> {
    u128::from_str_radix(hex, 16).ok()
}

/// Issue and expiry time from a managed Secret's annotations.
fn times(secret: &Secret) -> Option<TokenTimes> {
    let time = |key: &str| secret.annotations().get(key).and_then(|v| v.parse::<Timestamp>().ok());
    Some(TokenTimes { issued_at: time(ISSUED_AT_ANNOTATION)?, expires_at: time(EXPIRES_AT_ANNOTATION)? })
}

/// The token material in a managed Secret read from the API (not the cache), to rewrite it
/// without a new token; `target` names its keys.
pub fn material(secret: &Secret, target: &Target) -> Option<TokenMaterial> {
    let times = times(secret)?;
    let access_token = data_text(secret, target.access_token_key())?;
    let intact = is_recorded_token(secret, access_token.expose().as_bytes());
    intact.then(|| TokenMaterial { access_token, id_token: target.id_token_key.as_deref().and_then(|k| data_text(secret, k)), times })
}

/// True when `value` is the token whose fingerprint the Secret's annotation records.
pub fn is_recorded_token(secret: &Secret, value: &[u8]) -> bool {
    secret.annotations().get(TOKEN_FINGERPRINT_ANNOTATION).is_some_and(|recorded| *recorded == fingerprint(value))
}

fn data_text(secret: &Secret, key: &str) -> Option<Sensitive> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    (!text.is_empty()).then(|| Sensitive::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::REFRESH_REQUESTED_ANNOTATION;
    use crate::crd::{ClusterNavigatorToken, NavigatorToken};

    #[test]
    fn a_changed_proxy_changes_the_settings_fingerprint() {
        use crate::token::EgressProxy;
        let with = |proxy: &str, no_proxy: &str| ClientOptions {
            proxy: Some(EgressProxy::parse(proxy, no_proxy).unwrap()),
            ..ClientOptions::default()
        };
        let none = settings_fingerprint(&ClientOptions::default());
        let fingerprints = [
            none.clone(),
            settings_fingerprint(&with("http://proxy:3128", "")),
            settings_fingerprint(&with("http://proxy:3128", ".corp")),
            settings_fingerprint(&with("http://user:fixed@proxy:3128", "")),
        ];
        let distinct: std::collections::BTreeSet<_> = fingerprints.iter().collect();
        assert_eq!(distinct.len(), fingerprints.len(), "{fingerprints:?}");
        assert_eq!(settings_fingerprint(&ClientOptions::default()), none);
    }

    #[test]
    fn the_proxy_password_does_not_enter_the_settings_fingerprint() {
        use crate::token::EgressProxy;
        let with = |proxy: &str| ClientOptions { proxy: Some(EgressProxy::parse(proxy, "").unwrap()), ..ClientOptions::default() };
        assert_eq!(
            settings_fingerprint(&with("http://user:correct-horse@proxy:3128")),
            settings_fingerprint(&with("http://user:battery-staple@proxy:3128")),
        );
        assert_ne!(settings_fingerprint(&with("http://user:pw@proxy:3128")), settings_fingerprint(&with("http://other:pw@proxy:3128")));
    }

    /// A NavigatorToken and a ClusterNavigatorToken with every field that shapes their Secret.
    fn shaped(kind: &str, namespace: Option<&str>, target: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "pinned", "namespace": namespace, "uid": "u-9", "annotations": {REFRESH_REQUESTED_ANNOTATION: "2026-11-01T00:00:00Z"}},
            "spec": {
                "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "scope": "openid", "validity": "30m",
                "endpoint": {"type": "CSP", "url": "https://csp.example/"},
                "credentialsSecretRef": {"namespace": "ops", "name": "creds", "clientIdKey": "id"},
                "target": target,
            },
        })
    }

    fn shaped_target() -> serde_json::Value {
        json!({
            "secretName": "pinned-token", "accessTokenKey": "bearer", "idTokenKey": "id", "expiresAtKey": "exp",
            "labels": {"team": "a"}, "annotations": {"note": "n"},
            "template": {"type": "example.com/token", "data": {"who": "{{ name }}@{{ namespace }}/{{ orgId }}/{{ scope }}"},
                         "metadata": {"labels": {"app": "x"}, "annotations": {"shape": "y"}}},
        })
    }

    /// The Secrets and fingerprints of releases already running: a change of any byte here
    /// would reissue every token (inputs) or rewrite every Secret (template, data) after an upgrade.
    #[test]
    fn the_secrets_both_kinds_write_keep_their_bytes() {
        let mut issued = issued();
        issued.id_token = Some(Sensitive::new("eyJ.the-id-token.sig"));
        let token: NavigatorToken = serde_json::from_value(shaped("NavigatorToken", Some("team-a"), shaped_target())).unwrap();
        let place = token.placement();
        let written = desired(&token.spec.settings, &place, "team-a", &issued, "inputs").unwrap();
        let expected = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "example.com/token",
            "data": {
                "bearer": "ZXlKLnRoZS1hY2Nlc3MtdG9rZW4uc2ln", "exp": "MjAyNi0xMS0yM1QxMDozMDowMFo=", "id": "ZXlKLnRoZS1pZC10b2tlbi5zaWc=",
                "who": "cGlubmVkQHRlYW0tYS82YjhmMWMyZS0zZDRhLTRiNWMtOWQ2ZS03ZjgwOTFhMmIzYzQvb3Blbmlk",
            },
            "metadata": {
                "name": "pinned-token", "namespace": "team-a",
                "annotations": {
                    "navigator.dev/data-sha256": "836649fe370bdd0ed9f86c29c59deb49",
                    "navigator.dev/expires-at": "2026-11-23T10:30:00Z",
                    "navigator.dev/inputs-sha256": "inputs",
                    "navigator.dev/issued-at": "2026-11-23T10:00:00Z",
                    "navigator.dev/template-sha256": "6ef658dedd6c47dea8d2ff70c762ad94",
                    "navigator.dev/token": "pinned",
                    "navigator.dev/token-sha256": "621ce7835d27365c990241eec3608f32",
                    "note": "n", "shape": "y",
                },
                "labels": {"app": "x", "app.kubernetes.io/managed-by": "navigator-token-operator", "team": "a"},
                "ownerReferences": [{"apiVersion": "navigator.dev/v1alpha1", "controller": true, "kind": "NavigatorToken", "name": "pinned", "uid": "u-9"}],
            },
        });
        assert_eq!(serde_json::to_value(&written).unwrap(), expected);
        let settings = &token.spec.settings;
        assert_eq!(
            inputs_fingerprint(settings, &token.spec.credentials_secret_ref, "creds-fp", &place),
            "d85338d2d00867cc1418ad000f3ac3a5"
        );
        assert_eq!(expected_data_fingerprint(settings, &place, "team-a", &issued).unwrap(), 0x836649fe370bdd0ed9f86c29c59deb49);

        // A ClusterNavigatorToken's Secret in team-b: its label, and its owner reference unless retained.
        let labels =
            json!({"app": "x", "app.kubernetes.io/managed-by": "navigator-token-operator", CLUSTER_TOKEN_LABEL: "pinned", "team": "a"});
        let owner = json!([{"apiVersion": "navigator.dev/v1alpha1", "controller": true, "kind": "ClusterNavigatorToken", "name": "pinned", "uid": "u-9"}]);
        for (policy, owners, template_fp) in
            [("Retain", json!(null), "6a7aaccf279343e59547f0de203febea"), ("Delete", owner, "6ef658dedd6c47dea8d2ff70c762ad94")]
        {
            let mut target = shaped_target();
            target["deletionPolicy"] = json!(policy);
            target["namespaces"] = json!(["team-b"]);
            let cnvt: ClusterNavigatorToken = serde_json::from_value(shaped("ClusterNavigatorToken", None, target)).unwrap();
            let (settings, place) = (&cnvt.spec.settings, cnvt.placement());
            let written = serde_json::to_value(desired(settings, &place, "team-b", &issued, "inputs").unwrap()).unwrap();
            let (metadata, annotations) = (&written["metadata"], &written["metadata"]["annotations"]);
            assert_eq!((&metadata["namespace"], &metadata["labels"], &metadata["ownerReferences"]), (&json!("team-b"), &labels, &owners));
            assert_eq!(annotations[TEMPLATE_FINGERPRINT_ANNOTATION], template_fp, "{policy}");
            assert_eq!(annotations[DATA_FINGERPRINT_ANNOTATION], "df2244889704e02a63b20c244e750fba");
            assert_eq!(written["data"].as_object().unwrap().len(), 4);
            let credentials = &cnvt.spec.credentials_secret_ref.secret;
            assert_eq!(inputs_fingerprint(settings, credentials, "creds-fp", &place), "d85338d2d00867cc1418ad000f3ac3a5");
            assert_eq!(expected_data_fingerprint(settings, &place, "team-b", &issued).unwrap(), 0xdf2244889704e02a63b20c244e750fba);
        }
    }

    fn token() -> NavigatorToken {
        serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": "t", "namespace": "team-a", "uid": "u-1"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"}},
        }))
        .unwrap()
    }

    /// Decoded from JSON, as the watch decodes it.
    fn cached(secret: &Secret) -> ManagedSecret {
        serde_json::from_value(serde_json::to_value(secret).unwrap()).unwrap()
    }

    fn current(secret: &Secret, token: &NavigatorToken, inputs_fp: &str) -> CurrentToken {
        match observe(Some(&cached(secret).cached), &token.placement(), inputs_fp) {
            TargetSecret::Managed(Some(current)) => current,
            other => panic!("not a managed Secret with a token: {other:?}"),
        }
    }

    /// A token issued 2026-11-23T10:00Z for 30 minutes.
    fn issued() -> TokenMaterial {
        let issued_at: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        TokenMaterial {
            access_token: Sensitive::new("eyJ.the-access-token.sig"),
            id_token: None,
            times: TokenTimes { issued_at, expires_at: issued_at + jiff::SignedDuration::from_mins(30) },
        }
    }

    #[test]
    fn the_cache_keeps_what_tells_an_intact_token_and_not_the_token() {
        let token = token();
        let issued = issued();
        let inputs = fingerprint(b"inputs");
        let written = desired(&token.spec.settings, &token.placement(), "team-a", &issued, &inputs).unwrap();
        assert_eq!(material(&written, &token.spec.target()).map(|m| m.times), Some(issued.times));

        let kept = cached(&written);
        assert!(!format!("{kept:?}").contains("the-access-token"));
        assert_eq!((kept.name_any(), kept.namespace()), ("t".to_owned(), Some("team-a".to_owned())));
        let c = current(&written, &token, &inputs);
        assert_eq!((c.issued_at, c.expires_at), (issued.times.issued_at, issued.times.expires_at));
        assert!(c.intact && c.inputs_current && c.template_current, "{c:?}");
        assert!(!current(&written, &token, &fingerprint(b"other inputs")).inputs_current);

        let mut edited = written.clone();
        edited.data.as_mut().unwrap().insert("token".into(), ByteString(b"edited-by-hand".to_vec()));
        assert!(material(&edited, &token.spec.target()).is_none(), "an edited token is not rewritten as ours");
        assert!(!current(&edited, &token, &inputs).intact);

        let mut disowned = written.clone();
        disowned.metadata.owner_references.as_mut().unwrap()[0].uid = "someone-else".into();
        assert!(!current(&disowned, &token, &inputs).template_current);

        let mut unlabelled = written;
        unlabelled.labels_mut().remove(MANAGED_BY_LABEL);
        assert!(matches!(observe(Some(&cached(&unlabelled).cached), &token.placement(), &inputs), TargetSecret::Foreign));
    }

    #[test]
    fn rendered_keys_are_written_next_to_the_token_and_their_edits_are_noticed() {
        let mut token = token();
        token.spec.target = Some(Box::new(
            serde_json::from_value(json!({"template": {
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": r#"{"auths": {"r.example": {"password": {{ accessToken | tojson }} } } }"#},
                "metadata": {"labels": {"app": "pull"}},
            }}))
            .unwrap(),
        ));
        let issued = issued();
        let inputs = fingerprint(b"inputs");
        let written = desired(&token.spec.settings, &token.placement(), "team-a", &issued, &inputs).unwrap();
        assert_eq!(written.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        assert_eq!(written.labels().get("app").map(String::as_str), Some("pull"));
        let data = written.data.clone().unwrap();
        let config: serde_json::Value = serde_json::from_slice(&data[".dockerconfigjson"].0).unwrap();
        assert_eq!(config["auths"]["r.example"]["password"], "eyJ.the-access-token.sig");
        assert_eq!(data["token"].0, b"eyJ.the-access-token.sig", "the raw token stays, for rewrites without a new token");
        let c = current(&written, &token, &inputs);
        assert!(c.intact && c.template_current, "{c:?}");

        // Someone edits a rendered key: the token is intact, the Secret is rewritten with it.
        let mut edited = written.clone();
        edited.data.as_mut().unwrap().insert(".dockerconfigjson".into(), ByteString(b"{}".to_vec()));
        let c = current(&edited, &token, &inputs);
        assert!(c.intact && !c.template_current, "{c:?}");

        // A Secret written before the data fingerprint existed stays current.
        let mut legacy = written;
        legacy.annotations_mut().remove(DATA_FINGERPRINT_ANNOTATION);
        assert!(current(&legacy, &token, &inputs).template_current);
    }
}
