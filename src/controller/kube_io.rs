//! The Kubernetes writes and uncached reads of a reconcile, with their retry and
//! read-your-writes rules.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::debug;

use super::{Context, PerToken};
use crate::crd::{NavigatorToken, NavigatorTokenStatus};
use crate::reasons::{
    INVALID_TEMPLATE, NAMESPACE_TERMINATING, SECRET_IMMUTABLE, SECRET_INVALID, SECRET_QUOTA_EXCEEDED, SECRET_WRITE_FAILED,
    SECRET_WRITE_FORBIDDEN,
};
use crate::template::TemplateError;
use crate::token::RetryClass;
use crate::{Error, FIELD_MANAGER};

/// How long a reconcile waits for the watch caches to show its own writes.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

impl Context {
    /// A Secret of the target name that is not in the managed cache: one GET before a token is
    /// spent tells "no Secret yet" from "someone else's Secret".
    pub(super) async fn uncached_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(Error::kube("get target Secret"))
    }

    /// Applies the target Secret of `token` (in the token's namespace).
    pub(super) async fn apply_secret(&self, token: &NavigatorToken, desired: &Secret) -> Result<(), kube::Error> {
        let namespace = token.namespace().unwrap_or_default();
        if let Some(lag) = self.apply_secret_in(&namespace, desired).await? {
            self.record_lag(token, |lagging| lagging.secret = Some(lag));
        }
        Ok(())
    }

    /// Applies `desired` in `namespace` and waits (bounded) for the managed cache to show it.
    /// Returns the Secret's name and resourceVersion when the cache had not shown it in time.
    pub(super) async fn apply_secret_in(&self, namespace: &str, desired: &Secret) -> Result<Option<(String, String)>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let (name, params, patch) = (desired.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(desired));
        let written = with_retries(|| api.patch(&name, &params, &patch)).await?;
        let cached = || Some(self.managed_secrets.get(namespace, &name)?.resource_version);
        match written.resource_version() {
            Some(version) if !self.wait_for_cache(cached, &version).await => Ok(Some((name, version))),
            _ => Ok(None),
        }
    }

    /// Metadata of a Secret not in the managed cache: one GET tells "none yet" from someone
    /// else's Secret (whose data it does not transfer).
    pub(super) async fn uncached_secret_metadata(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_metadata_opt(name).await?;
        Ok(found.map(|meta| Secret { metadata: meta.metadata, ..Secret::default() }))
    }

    /// Deletes a Secret this operator wrote, only if it is still the version the cache showed
    /// (a precondition): a Secret re-created or changed meanwhile is left alone. Gone already
    /// counts as deleted.
    pub(super) async fn delete_secret_version(&self, namespace: &str, name: &str, resource_version: &str) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(resource_version.to_owned()), uid: None }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Applies `status` to the NavigatorToken's status subresource.
    pub(super) async fn apply_status(&self, token: &NavigatorToken, status: &NavigatorTokenStatus) -> Result<(), Error> {
        let namespace = token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<NavigatorToken> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "status": status});
        let (name, params, patch) = (token.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&patch));
        let written =
            with_retries(|| api.patch_status(&name, &params, &patch)).await.map_err(Error::kube("patch NavigatorToken status"))?;
        let key = ObjectRef::from_obj(&written);
        if let Some(version) = written.resource_version()
            && !self.wait_for_cache(|| self.token_store.get(&key)?.resource_version(), &version).await
        {
            self.record_lag(token, |lag| lag.status = Some(version));
        }
        Ok(())
    }

    /// True when the caches show every write of ours to `token` and its Secret that they had
    /// not shown in time. Until then a reconcile must not act: its view may predate a token
    /// it stored itself, and acting on it could request a second token for the same window.
    pub(super) fn caches_caught_up(&self, token: &NavigatorToken) -> bool {
        let key = ObjectRef::from_obj(token);
        let mut lagging = self.per_token.lagging.lock().unwrap_or_else(|p| p.into_inner());
        let Some(writes) = lagging.get(&key) else { return true };
        let namespace = token.namespace().unwrap_or_default();
        let secret_shown = writes.secret.as_ref().is_none_or(|(name, version)| {
            self.managed_secrets.get(&namespace, name).is_some_and(|s| resource_version_at_least(&s.resource_version, version))
        });
        let status_shown = writes.status.as_ref().is_none_or(|version| {
            self.token_store.get(&key).and_then(|t| t.resource_version()).is_some_and(|rv| resource_version_at_least(&rv, version))
        });
        let caught_up = secret_shown && status_shown;
        if caught_up {
            lagging.remove(&key);
        }
        caught_up
    }

    fn record_lag(&self, token: &NavigatorToken, record: impl FnOnce(&mut LaggingWrites)) {
        let mut lagging = self.per_token.lagging.lock().unwrap_or_else(|p| p.into_inner());
        record(lagging.entry(ObjectRef::from_obj(token)).or_default());
    }
}

impl PerToken {
    /// The watch saw Secret `namespace/name` deleted at `resource_version`. A write of ours to it
    /// that the cache had not shown never will be (the object is gone), and the deletion shows
    /// the cache is past it: without this, `caches_caught_up` would wait for it forever and the
    /// NavigatorToken would never get its Secret back.
    pub(super) fn secret_deleted(&self, namespace: &str, name: &str, resource_version: &str) {
        let mut lagging = self.lagging.lock().unwrap_or_else(|p| p.into_inner());
        for (key, writes) in lagging.iter_mut().filter(|(key, _)| key.namespace.as_deref() == Some(namespace)) {
            if writes
                .secret
                .as_ref()
                .is_some_and(|(secret, written)| secret == name && resource_version_at_least(resource_version, written))
            {
                debug!(navigatortoken = key.name, secret = name, "the Secret written was deleted before the cache showed it");
                writes.secret = None;
            }
        }
    }
}

/// Writes of ours that the watch caches had not shown when the reconcile that made them ended.
#[derive(Debug, Default)]
pub(super) struct LaggingWrites {
    /// The target Secret's name and the resourceVersion written.
    secret: Option<(String, String)>,
    /// The resourceVersion of the status written.
    status: Option<String>,
}

/// Why the target Secret could not be written, in terms a person can act on.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SecretWriteFailure {
    /// The condition and Event reason.
    pub(super) reason: &'static str,
    /// What happened and what to do.
    pub(super) message: String,
}

/// The longest piece of an API server message quoted in status (admission webhooks can say a lot).
const MAX_QUOTED: usize = 400;

impl SecretWriteFailure {
    /// A template that does not render: nothing was sent, and only a spec change helps.
    pub(super) fn template(error: TemplateError) -> SecretWriteFailure {
        SecretWriteFailure { reason: INVALID_TEMPLATE, message: format!("{error}; the Secret is left as it is") }
    }

    /// How to retry: API refusals back off like upstream failures; a template waits for a fix.
    pub(super) fn retry_class(&self) -> RetryClass {
        if self.reason == INVALID_TEMPLATE { RetryClass::NeedsUserAction } else { RetryClass::Transient }
    }

    /// Classifies a failed write of Secret `name` in `namespace`, `sent` being what was sent
    /// (an empty Secret when nothing was). The server's message is quoted with every value of
    /// `sent` taken out, as text and in base64: an admission webhook may echo the object, and
    /// the API server receives a Secret's data base64-encoded, so an echo holds the base64 of
    /// each value (of `Bearer <token>` too, which does not contain the token's own base64).
    pub(super) fn classify(error: &kube::Error, namespace: &str, name: &str, sent: &Secret) -> SecretWriteFailure {
        let values: Vec<&[u8]> = sent
            .data
            .iter()
            .flatten()
            .map(|(_, value)| value.0.as_slice())
            .chain(sent.string_data.iter().flatten().map(|(_, value)| value.as_bytes()))
            .collect();
        let scrub = |text: &str| scrub(text, &values);
        let status = match error {
            kube::Error::Api(status) => status,
            other => {
                let message = format!("writing Secret {name} failed: {}", scrub(&other.to_string()));
                return SecretWriteFailure { reason: SECRET_WRITE_FAILED, message };
            }
        };
        let said = scrub(&status.message);
        let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
        let cause = |reason: &str, field: &str| causes.iter().any(|c| c.reason == reason || (!field.is_empty() && c.field == field));
        let (reason, message) = match status.code {
            // The API server's cause, which this operator's reason repeats.
            403 if cause("NamespaceTerminating", "") => {
                (NAMESPACE_TERMINATING, format!("namespace {namespace} is being deleted; Secret {name} cannot be written there"))
            }
            403 if status.message.contains("exceeded quota") => (
                SECRET_QUOTA_EXCEEDED,
                format!(
                    "a ResourceQuota in namespace {namespace} leaves no room for Secret {name} ({said}). Raise the quota or delete unused Secrets; the token already issued is stored then"
                ),
            ),
            403 => (
                SECRET_WRITE_FORBIDDEN,
                format!(
                    "writing Secret {name} was forbidden ({said}). Check the operator's RBAC and any admission webhook or policy on Secrets in namespace {namespace}"
                ),
            ),
            422 if causes.iter().any(|c| c.field == "data" && c.message.contains("immutable")) => (
                SECRET_IMMUTABLE,
                format!(
                    "Secret {name} is marked immutable and cannot take the new token. Delete it and the operator recreates it with the current token"
                ),
            ),
            422 if cause("", "type") => (
                SECRET_INVALID,
                format!(
                    "Secret {name} exists with another type and the type of a Secret cannot change ({said}). Delete it and the operator recreates it"
                ),
            ),
            400 | 422 => {
                (SECRET_INVALID, format!("the API server rejected Secret {name} ({said}). Fix spec.target (labels, annotations, keys)"))
            }
            _ => (SECRET_WRITE_FAILED, format!("writing Secret {name} failed ({said}); retrying with backoff")),
        };
        SecretWriteFailure { reason, message }
    }
}

/// Shortest value scrubbed: shorter ones (a rendered `true`) are no secret, and replacing them
/// would garble the message.
const MIN_SCRUBBED: usize = 8;

/// `text` with the `values` replaced, in every form an echo may hold them: as text, and in
/// standard and URL-safe base64, with and without padding; then words that are a piece of a
/// token-like form (a webhook that cuts what it quotes); then cut to [`MAX_QUOTED`] characters
/// (in that order, so that no cut-off piece of a value survives).
fn scrub(text: &str, values: &[&[u8]]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let one_word = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c));
    let (mut forms, mut pieces) = (Vec::new(), Vec::new());
    for value in values.iter().filter(|v| v.len() >= MIN_SCRUBBED) {
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(value);
            pieces.push(encoded.clone());
            forms.push(encoded);
        }
        if let Ok(text) = std::str::from_utf8(value) {
            // A rendered value's words ("password", a registry's host) are no secret's pieces.
            if one_word(text) {
                pieces.push(text.to_owned());
            }
            forms.push(text.to_owned());
        }
    }
    // The longest first: `Bearer <token>` goes whole, not leaving `Bearer <redacted>`'s kin.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    let mut out = text.to_owned();
    for form in &forms {
        out = out.replace(form.as_str(), "<redacted>");
    }
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let out = crate::token::client::without_fragments(&out, &pieces);
    out.chars().take(MAX_QUOTED).collect()
}

/// Retries a write a few times on conflicts, throttling and server errors: they are usually
/// momentary, and a failed Secret write would otherwise wait for the error policy's requeue.
pub(super) async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..3 {
        match write().await {
            Err(kube::Error::Api(status)) if matches!(status.code, 409 | 429 | 500..=599) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    write().await
}

impl Context {
    /// Waits (bounded) until a watch cache shows a write of ours, so the next reconcile cannot act
    /// on the state from before it (which could request a second token). False when it timed out,
    /// or when the controllers are stopping: their watches have ended, the caches will not catch
    /// up, and no next reconcile will read them.
    pub(super) async fn wait_for_cache(&self, cached_version: impl Fn() -> Option<String>, written: &str) -> bool {
        let caught_up = || cached_version().is_some_and(|rv| resource_version_at_least(&rv, written));
        let deadline = Instant::now() + READ_YOUR_WRITES_TIMEOUT;
        while !caught_up() {
            if Instant::now() >= deadline || *self.stopping.borrow() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits until the watches behind `synced` have listed: reads must come from listed caches,
    /// or a restart would look like "no Secret yet". False when the controllers stop first (a
    /// watch refused its list, say): the reconcile must then end, or the stop would wait for it
    /// for good.
    pub(super) async fn wait_listed(&self, synced: &tokio::sync::watch::Receiver<bool>) -> bool {
        let (mut synced, mut stopping) = (synced.clone(), self.stopping.clone());
        tokio::select! {
            biased;
            _ = synced.wait_for(|listed| *listed) => true,
            _ = stopping.wait_for(|stopping| *stopping) => false,
        }
    }
}

/// resourceVersions are opaque, but etcd's are integers; compare numerically when both are.
pub(super) fn resource_version_at_least(have: &str, want: &str) -> bool {
    match (have.parse::<u64>(), want.parse::<u64>()) {
        (Ok(h), Ok(w)) => h >= w,
        _ => have == want,
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::controller::secret::{TokenMaterial, TokenTimes};
    use crate::redact::Sensitive;

    /// An API error with the code, message and causes a genuine kube-apiserver v1.28 answered.
    fn api_error(code: u16, reason: &str, message: &str, causes: serde_json::Value) -> kube::Error {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message, "details": {"name": "tok", "kind": "secrets", "causes": causes}});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    fn material() -> TokenMaterial {
        let t: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        TokenMaterial {
            access_token: Sensitive::new("eyJ.secret-access-token.sig"),
            id_token: None,
            times: TokenTimes { issued_at: t, expires_at: t },
        }
    }

    /// The Secret sent: the raw token, and a key rendered from a template.
    fn sent() -> Secret {
        let token: NavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": "tok", "namespace": "team-a", "uid": "u-1"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"},
                     "target": {"template": {"data": {"authorization": "Bearer {{ accessToken }}"}}}},
        }))
        .unwrap();
        crate::controller::secret::desired(&token, &material(), "inputs").unwrap()
    }

    fn classify(error: &kube::Error) -> SecretWriteFailure {
        SecretWriteFailure::classify(error, "team-a", "tok", &sent())
    }

    #[test]
    fn each_recorded_refusal_gets_a_reason_a_person_can_act_on() {
        let quota = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: exceeded quota: secrets, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1"#,
            json!([]),
        );
        let terminating = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: unable to create new content in namespace team-a because it is being terminated"#,
            json!([{"reason": "NamespaceTerminating", "message": "namespace team-a is being terminated", "field": "metadata.namespace"}]),
        );
        let rbac = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: User "system:serviceaccount:ops:navigator-token-operator" cannot patch resource "secrets""#,
            json!([]),
        );
        let immutable = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: data: Forbidden: field is immutable when `immutable` is set"#,
            json!([{"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable when `immutable` is set", "field": "data"}]),
        );
        let type_change = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: type: Invalid value: "example.com/other": field is immutable"#,
            json!([{"reason": "FieldValueInvalid", "message": "Invalid value: \"example.com/other\": field is immutable", "field": "type"}]),
        );
        let label = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters"#,
            json!([{"reason": "FieldValueInvalid", "message": "Invalid value: \"bad key!\"", "field": "metadata.labels"}]),
        );
        let unavailable = api_error(503, "ServiceUnavailable", "etcdserver: leader changed", json!([]));
        let cases = [
            (&quota, "SecretQuotaExceeded", "Raise the quota"),
            (&terminating, "NamespaceTerminating", "being deleted"),
            (&rbac, "SecretWriteForbidden", "RBAC"),
            (&immutable, "SecretImmutable", "Delete it and the operator recreates it"),
            (&type_change, "SecretInvalid", "type of a Secret cannot change"),
            (&label, "SecretInvalid", "bad key!"),
            (&unavailable, "SecretWriteFailed", "etcdserver: leader changed"),
        ];
        for (error, reason, hint) in cases {
            let failure = classify(error);
            assert_eq!(failure.reason, reason, "{error}");
            assert!(failure.message.contains(hint), "{reason}: {}", failure.message);
            assert!(crate::reasons::SECRET_WRITE_FAILURES.contains(&failure.reason));
        }
    }

    #[test]
    fn a_refusal_that_echoes_the_token_is_quoted_without_it() {
        use base64::Engine;
        let token = material().access_token.expose().to_owned();
        let echoed = format!(
            "admission webhook \"policy.example.com\" denied the request: data.token {token} ({}) is not allowed",
            base64::engine::general_purpose::STANDARD.encode(&token)
        );
        let failure = classify(&api_error(403, "Forbidden", &echoed, json!([])));
        assert_eq!(failure.reason, "SecretWriteForbidden");
        assert!(!failure.message.contains("secret-access-token"), "{}", failure.message);
        assert!(!failure.message.contains(&base64::engine::general_purpose::STANDARD.encode(&token)[..20]), "{}", failure.message);
        assert!(failure.message.contains("policy.example.com"));
        let long = classify(&api_error(403, "Forbidden", &"x".repeat(10_000), json!([])));
        assert!(long.message.len() < 1_000, "quoted messages are bounded");
    }

    #[test]
    fn a_refusal_that_echoes_a_rendered_key_in_base64_is_quoted_without_it() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let rendered = sent().data.unwrap()["authorization"].0.clone();
        assert_eq!(rendered, b"Bearer eyJ.secret-access-token.sig");
        // The base64 of `Bearer <token>` holds no base64 of the token at a fixed offset.
        assert!(!STANDARD.encode(&rendered).contains(&STANDARD.encode(b"eyJ.secret-access-token.sig")[..12]));
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let echoed = engine.encode(&rendered);
            let message = format!(
                r#"admission webhook "policy.example.com" denied the request: data[authorization]: Invalid value: "{echoed}"; first bytes: {}..."#,
                &echoed[..24]
            );
            for code in [400, 422] {
                let failure = classify(&api_error(code, "Invalid", &message, json!([])));
                assert_eq!(failure.reason, "SecretInvalid");
                assert!(!failure.message.contains(&echoed[..16]), "{code}: {}", failure.message);
                assert!(failure.message.contains("policy.example.com") && failure.message.contains("data[authorization]"));
            }
        }
        // As text, too (a webhook that decodes what it quotes).
        let failure = classify(&api_error(422, "Invalid", "value \"Bearer eyJ.secret-access-token.sig\" is not allowed", json!([])));
        assert!(!failure.message.contains("secret-access-token"), "{}", failure.message);
    }
}
