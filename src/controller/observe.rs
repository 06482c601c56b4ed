//! What one reconcile reads before deciding: the credentials (from the label-selected cache),
//! the failures previous status records, and the checks of the spec that stop a token request.
//! Data out, no decisions and no writes; shared by both kinds.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use super::credentials::CredentialsSecret;
use super::plan::{self, FailureState, Observed, TargetSecret};
use super::secret;
use super::status;
use crate::crd::{CredentialsSecretRef, NavigatorTokenStatus, SecretTemplate, TokenSettings};
use crate::metrics::TokenLabels;
use crate::reasons::{
    CREDENTIALS_INVALID, CREDENTIALS_NOT_FOUND, CREDENTIALS_NOT_LABELLED, CREDENTIALS_REJECTED, INVALID_SPEC, INVALID_TEMPLATE,
};
use crate::redact::Sensitive;
use crate::template;
use crate::token::Grant;
use crate::{CREDENTIALS_LABEL, Error};

/// A condition that stops a token request before it is made: the user must change something.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Blocked {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl Blocked {
    /// What a blocked attempt is recorded under: the reason and the spec, so that any change of
    /// the spec retries at once. The spec's JSON, not its `Debug` text: a refactor of the Rust
    /// types must not change it (a changed fingerprint skips the backoff of every blocked object).
    pub(super) fn fingerprint(&self, spec: &impl serde::Serialize) -> String {
        let spec = serde_json::to_string(spec).unwrap_or_default();
        secret::fingerprint(format!("{}{spec}", self.reason).as_bytes())
    }
}

/// The credentials a token request is made with, as the credentials Secret holds them.
pub(super) struct Credentials {
    /// The kind and values ([`Grant`]): client credentials, an API token, or client credentials
    /// with the refresh token the user put in (the seed of the refresh-token chain).
    pub(super) grant: Grant,
    /// Fingerprint of the values (see `secret::credentials_fingerprint`).
    pub(super) fingerprint: String,
}

/// The credentials `reference` names in `namespace`, from the label-selected cache only (no
/// API call). The one place credentials are read, for every kind of token object.
pub(super) fn read_credentials(
    cache: &Store<CredentialsSecret>,
    reference: &CredentialsSecretRef,
    namespace: &str,
) -> Result<Credentials, Blocked> {
    let Some(secret) = cache.get(&ObjectRef::new(&reference.name).within(namespace)) else {
        // Refined by `explain_uncached_credentials` when it is reported.
        return Err(Blocked {
            reason: CREDENTIALS_NOT_FOUND,
            message: format!("credentials Secret {} not found in namespace {namespace}", reference.name),
        });
    };
    credentials_from(&secret, reference)
}

/// Not in the label-selected cache: one GET tells a missing Secret from a missing label.
/// Only called when the failure is reported, never on a routine path.
pub(super) async fn explain_uncached_credentials(client: &Client, name: &str, namespace: &str) -> Result<Blocked, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let exists = api.get_metadata_opt(name).await.map_err(Error::kube("get credentials Secret"))?.is_some();
    Ok(if exists {
        Blocked {
            reason: CREDENTIALS_NOT_LABELLED,
            message: format!(
                "credentials Secret {name} lacks the label {CREDENTIALS_LABEL}=true that lets the operator watch it; run: kubectl label secret -n {namespace} {name} {CREDENTIALS_LABEL}=true"
            ),
        }
    } else {
        Blocked { reason: CREDENTIALS_NOT_FOUND, message: format!("credentials Secret {name} not found in namespace {namespace}") }
    })
}

/// The credentials `reference` names, from what the cache kept of their Secret.
fn credentials_from(secret: &CredentialsSecret, reference: &CredentialsSecretRef) -> Result<Credentials, Blocked> {
    let value = |key: &str| -> Result<String, Blocked> {
        secret.value(key).map(str::to_owned).map_err(|problem| Blocked {
            reason: CREDENTIALS_INVALID,
            message: format!("credentials Secret {}: {}", reference.name, problem.describe(key)),
        })
    };
    if let Some(key) = reference.api_token_key.as_deref() {
        let api_token = value(key)?;
        let fingerprint = secret::credentials_fingerprint(&[(key, &api_token)]);
        return Ok(Credentials { grant: Grant::ApiToken(Sensitive::new(api_token)), fingerprint });
    }
    let client_id = value(reference.client_id_key())?;
    let client_secret = if reference.public_client { String::new() } else { value(reference.client_secret_key())? };
    let mut values = vec![(reference.client_id_key(), client_id.as_str()), (reference.client_secret_key(), client_secret.as_str())];
    let refresh_token = reference.refresh_token_key.as_deref().map(|key| Ok::<_, Blocked>((key, value(key)?))).transpose()?;
    values.extend(refresh_token.as_ref().map(|(key, value)| (*key, value.as_str())));
    let fingerprint = secret::credentials_fingerprint(&values);
    let client_secret = Sensitive::new(client_secret);
    let grant = match refresh_token {
        Some((_, refresh_token)) => Grant::RefreshToken { client_id, client_secret, refresh_token: Sensitive::new(refresh_token) },
        None => Grant::ClientCredentials { client_id, client_secret },
    };
    Ok(Credentials { grant, fingerprint })
}

/// The failures `previous` status records, for the plan; `secret_write` is the caller's (false).
pub(super) fn failure_state(previous: Option<&NavigatorTokenStatus>, attempt_fp: &str, generation: Option<i64>) -> FailureState {
    let last_failure = previous.and_then(|s| s.last_failure.as_ref());
    FailureState {
        consecutive_failures: previous.map_or(0, |s| s.consecutive_failures),
        retry_at: previous.and_then(|s| s.next_refresh_at.as_deref()).and_then(|t| t.parse().ok()),
        // A spec change (a new generation) retries at once, as a change of inputs does.
        same_inputs: previous.and_then(|s| s.inputs_fingerprint.as_deref()) == Some(attempt_fp)
            && previous.and_then(|s| s.observed_generation) == generation,
        secret_write: false,
        until_credentials_change: last_failure.is_some_and(|f| CREDENTIALS_REJECTED.contains(&f.reason.as_str())),
    }
}

fn parse_duration(value: Option<&str>, field: &str) -> Result<Option<Duration>, Blocked> {
    value
        .map(|v| crate::duration::parse(v).map_err(|e| Blocked { reason: INVALID_SPEC, message: format!("spec.{field}: {e}") }))
        .transpose()
}

/// What a token request is made with, once every check passed.
pub(super) struct Inputs {
    pub(super) credentials: Credentials,
    pub(super) refresh_before: Option<Duration>,
    pub(super) validity: Option<Duration>,
}

/// The inputs of a token request (either kind): `credentials` as read, and `settings` and the
/// target's `template` checked. The first check that fails, in that order, blocks the request.
pub(super) fn inputs(
    credentials: Result<Credentials, Blocked>,
    settings: &TokenSettings,
    template: Option<&SecretTemplate>,
    labels: &TokenLabels,
) -> Result<Inputs, Blocked> {
    let refresh_before = parse_duration(settings.refresh_before.as_deref(), "refreshBefore");
    let validity = parse_duration(settings.validity.as_deref(), "validity");
    let template = check_template(template, settings, labels);
    match (credentials, refresh_before, validity, template) {
        (Ok(credentials), Ok(refresh_before), Ok(validity), Ok(())) => Ok(Inputs { credentials, refresh_before, validity }),
        (Err(b), ..) | (_, Err(b), ..) | (_, _, Err(b), _) | (.., Err(b)) => Err(b),
    }
}

/// What the plan decides on (either kind): `secret` is the token the target holds, `failures`
/// what status records, `uid` the object's (its jitter).
pub(super) fn observed(
    suspended: bool,
    inputs: &Result<Inputs, Blocked>,
    secret: TargetSecret,
    failures: FailureState,
    previous: Option<&NavigatorTokenStatus>,
    uid: Option<&str>,
) -> Observed {
    Observed {
        suspended,
        refresh_before: inputs.as_ref().ok().and_then(|i| i.refresh_before),
        secret,
        failures,
        ready: status::is_ready(previous),
        jitter_seed: plan::jitter_seed(uid.unwrap_or_default()),
    }
}

/// Renders the target's `template` with placeholder values: a template that cannot work costs
/// no token request, and the Secret stays as it is.
fn check_template(template: Option<&SecretTemplate>, settings: &TokenSettings, labels: &TokenLabels) -> Result<(), Blocked> {
    let Some(template) = template else { return Ok(()) };
    template::check(&template.data, &settings.org_id, &labels.name, &labels.namespace)
        .map_err(|e| Blocked { reason: INVALID_TEMPLATE, message: format!("{e}; the Secret is left as it is") })
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::*;

    fn credentials_secret(data: serde_json::Value) -> CredentialsSecret {
        serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "team-a"}, "data": data}),
        )
        .unwrap()
    }

    #[test]
    fn a_blocked_attempt_is_recorded_under_the_specs_json_whatever_its_rust_layout() {
        let spec: crate::crd::NavigatorTokenSpec = serde_json::from_value(json!({
            "orgId": "00000000-0000-0000-0000-000000000001",
            "credentialsSecretRef": {"name": "creds"},
            "validity": "30m",
        }))
        .unwrap();
        let blocked = Blocked { reason: INVALID_TEMPLATE, message: String::new() };
        let expected = secret::fingerprint(format!("{INVALID_TEMPLATE}{}", serde_json::to_string(&spec).unwrap()).as_bytes());
        assert_eq!(blocked.fingerprint(&spec), expected);
        // Pinned: the JSON nests nothing for the flattened settings, so the fields read as the CRD has them.
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"orgId":"00000000-0000-0000-0000-000000000001","validity":"30m","credentialsSecretRef":{"name":"creds"}}"#
        );
        let other = Blocked { reason: crate::reasons::INVALID_SPEC, message: String::new() };
        assert_ne!(other.fingerprint(&spec), expected, "the reason is part of what is recorded");
    }

    fn b64(value: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(value)
    }

    fn reference(value: serde_json::Value) -> CredentialsSecretRef {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_credential_too_large_to_keep_is_named_in_the_message() {
        let secret = credentials_secret(json!({"client_id": b64(b"robot"), "client_secret": b64(&vec![b's'; 1024 * 1024])}));
        assert!(secret.kept_bytes() <= crate::controller::credentials::MAX_KEPT_BYTES);
        let blocked = credentials_from(&secret, &reference(json!({"name": "creds"}))).err().unwrap();
        assert_eq!(blocked.reason, "CredentialsInvalid");
        assert_eq!(
            blocked.message,
            "credentials Secret creds: key client_secret is larger than the 8 KiB the operator keeps per credentials Secret; keep only the credentials in this Secret"
        );
    }

    #[test]
    fn the_credentials_fingerprint_covers_the_named_values_only() {
        let secret =
            credentials_secret(json!({"client_id": b64(b" robot\n"), "client_secret": b64(b"s3cret"), "ca.crt": b64(&[b'c'; 20_000])}));
        let credentials = credentials_from(&secret, &reference(json!({"name": "creds"}))).ok().unwrap();
        assert_eq!(credentials.fingerprint, secret::credentials_fingerprint(&[("client_id", "robot"), ("client_secret", "s3cret")]));
        assert!(matches!(credentials.grant, Grant::ClientCredentials { ref client_id, .. } if client_id == "robot"));
        let missing = credentials_from(&secret, &reference(json!({"name": "creds", "clientSecretKey": "other"}))).err().unwrap();
        assert_eq!(missing.message, "credentials Secret creds: key other is missing");
    }
}
