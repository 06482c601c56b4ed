//! One reconcile: observe (caches) → decide (`plan`, pure) → act (`act`), and the error policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, debug, info_span, warn};

use super::Context;
use super::act::Actor;
use super::credentials::CredentialsSecret;
use super::plan::{self, FailureState, IssueReason, Observed, Step, TargetSecret};
use super::secret;
use super::status;
use crate::crd::{CredentialsSecretRef, NavigatorToken, NavigatorTokenStatus};
use crate::metrics::{ReconcileLabels, TokenLabels};
use crate::reasons::{
    CREDENTIALS_INVALID, CREDENTIALS_NOT_FOUND, CREDENTIALS_NOT_LABELLED, CREDENTIALS_REJECTED, INVALID_SPEC, INVALID_TEMPLATE,
    RECONCILE_ERROR, RECONCILE_OK, SECRET_CONFLICT, SECRET_WRITE_FAILURES,
};
use crate::redact::Sensitive;
use crate::template;
use crate::token::{Grant, RetryClass};
use crate::{CREDENTIALS_LABEL, Error};

/// How soon a reconcile looks again while the caches lag behind its own writes.
const CACHE_LAG_RECHECK: Duration = Duration::from_secs(1);

/// A condition that stops a token request before it is made: the user must change something.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Blocked {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// The credentials a token request is made with, as the credentials Secret holds them.
pub(super) struct Credentials {
    /// The kind and values ([`Grant`]): client credentials, an API token, or client credentials
    /// with the refresh token the user put in (the seed of the refresh-token chain).
    pub(super) grant: Grant,
    /// Fingerprint of the values (see `secret::credentials_fingerprint`).
    pub(super) fingerprint: String,
}

/// Handles errors of the Kubernetes side (token errors are handled in `reconcile`): retry soon.
pub(super) fn error_policy(token: Arc<NavigatorToken>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = token.namespace().unwrap_or_default(), navigatortoken = token.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_ERROR.into() }).inc();
    Action::requeue(Duration::from_secs(5))
}

pub(super) async fn reconcile(token: Arc<NavigatorToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    // Not `name`: JSON logs put the span's own name ("reconcile") under that key too.
    let span = info_span!("reconcile", namespace = token.namespace().unwrap_or_default(), navigatortoken = token.name_any());
    let result = reconcile_inner(&token, &ctx).instrument(span).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.metrics.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_OK.into() }).inc();
    }
    result
}

async fn reconcile_inner(token: &NavigatorToken, ctx: &Context) -> Result<Action, Error> {
    if !ctx.wait_listed(&ctx.synced).await {
        return Ok(Action::await_change());
    }
    let labels = TokenLabels { namespace: token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?, name: token.name_any() };
    if token.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget(&labels);
        return Ok(Action::await_change());
    }
    if !ctx.caches_caught_up(token) {
        debug!("waiting for the caches to show this operator's last writes");
        return Ok(Action::requeue(CACHE_LAG_RECHECK));
    }
    let now = Timestamp::now();
    debug!(generation = token.metadata.generation, resource_version = token.resource_version(), "reconciling");
    let previous = token.status.as_ref();

    let credentials = ctx.read_credentials(&token.spec.credentials_secret_ref, &labels.namespace);
    let refresh_before = parse_duration(token.spec.refresh_before.as_deref(), "refreshBefore");
    let validity = parse_duration(token.spec.validity.as_deref(), "validity");
    let template = check_template(token, &labels);
    let inputs = match (credentials, refresh_before, validity, template) {
        (Ok(c), Ok(r), Ok(v), Ok(())) => Ok((c, r, v)),
        (Err(b), ..) | (_, Err(b), ..) | (_, _, Err(b), _) | (.., Err(b)) => Err(b),
    };
    let inputs_fp = match &inputs {
        Ok((c, ..)) => secret::inputs_fingerprint(token, &c.fingerprint),
        Err(blocked) => secret::fingerprint(format!("{}{:?}", blocked.reason, token.spec).as_bytes()),
    };
    // A failure is retried at once when the inputs or the operator's settings changed since
    // (an operator restarted with a corrected allow-list re-evaluates what it blocked).
    let attempt_fp = secret::attempt_fingerprint(&inputs_fp, &ctx.settings_fp);
    let failures = FailureState {
        // Only while status describes a token (the Secret held a valid one at the failure): a
        // write that fails before the Secret ever existed would otherwise retry in a tight loop.
        secret_write: previous.is_some_and(|s| s.issued_at.is_some())
            && previous.and_then(|s| s.last_failure.as_ref()).is_some_and(|f| SECRET_WRITE_FAILURES.contains(&f.reason.as_str())),
        ..failure_state(previous, &attempt_fp, token.metadata.generation)
    };
    let secret_name = token.target_secret_name();
    let cached_secret = ctx.managed_secrets.get(&labels.namespace, &secret_name);
    let target = secret::observe(cached_secret.as_ref(), token, &inputs_fp);
    let observed = Observed {
        suspended: token.spec.suspend,
        refresh_before: inputs.as_ref().ok().and_then(|(_, r, _)| *r),
        secret: target.clone(),
        failures,
        ready: status::is_ready(previous),
        jitter_seed: jitter_seed(token),
    };
    let mut action = Actor {
        token,
        ctx,
        previous,
        now,
        labels: &labels,
        target: &target,
        inputs_fp: &inputs_fp,
        attempt_fp: &attempt_fp,
        rollout: None,
        credentials_checked: None,
    };
    let plan = plan::decide(&observed, now);
    let conflict = || {
        format!(
            "Secret {secret_name} already exists and was not created by this operator for this NavigatorToken; it is left untouched. Delete it or choose another spec.target.secretName"
        )
    };
    match (plan.step.clone(), inputs) {
        (Step::Suspended, _) => action.suspended().await,
        (Step::WaitForRetry, _) => {
            // After a restart this is the first look at a failing token: its series start here,
            // not at the next attempt minutes later (an alert's `for:` clock keeps running).
            ctx.metrics.consecutive_failures.get_or_create(&labels).set(i64::from(observed.failures.consecutive_failures));
            if let TargetSecret::Managed(Some(current)) = &target {
                ctx.metrics.token_expiry.get_or_create(&labels).set(current.expires_at.as_second());
            }
            Ok(requeue_at(plan.next_at, now))
        }
        (Step::Lapsed, _) => action.lapsed(plan.next_at).await,
        (Step::SecretConflict, _) => action.fail(SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction).await,
        (_, Err(mut blocked)) => {
            if blocked.reason == CREDENTIALS_NOT_FOUND {
                blocked = ctx.explain_uncached_credentials(&token.spec.credentials_secret_ref.name, &labels.namespace).await?;
            }
            action.fail(blocked.reason, &blocked.message, RetryClass::NeedsUserAction).await
        }
        (Step::Keep { rewrite_secret }, Ok((credentials, refresh_before, validity))) => {
            let kept = if rewrite_secret {
                // The cache holds fingerprints only: a rewrite (a template change, rare) reads the token once.
                let stored = ctx.uncached_secret(&labels.namespace, &secret_name).await?;
                stored.and_then(|s| secret::material(&s, token)).map(|m| (m.times, Some(m)))
            } else {
                cached_secret.as_ref().and_then(|s| s.times).map(|times| (times, None))
            };
            match kept {
                Some((times, rewrite)) => action.succeed(times, rewrite.as_ref(), plan.next_at, refresh_before, None).await,
                // The Secret changed since the cache saw it; a new token is the safe answer.
                None => action.issue(IssueReason::Drift, &credentials, validity, refresh_before).await,
            }
        }
        (Step::Issue(reason), Ok((credentials, refresh_before, validity))) => {
            if cached_secret.is_none()
                && let Some(existing) = ctx.uncached_secret(&labels.namespace, &secret_name).await?
                && !secret::is_ours(&existing, token)
            {
                return action.fail(SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction).await;
            }
            action.issue(reason, &credentials, validity, refresh_before).await
        }
    }
}

impl Context {
    /// The credentials `reference` names in `namespace`, from the label-selected cache only (no
    /// API call). The one place credentials are read, for every kind of token object.
    pub(super) fn read_credentials(&self, reference: &CredentialsSecretRef, namespace: &str) -> Result<Credentials, Blocked> {
        let Some(secret) = self.credentials.get(&ObjectRef::new(&reference.name).within(namespace)) else {
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
    pub(super) async fn explain_uncached_credentials(&self, name: &str, namespace: &str) -> Result<Blocked, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
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

pub(super) fn parse_duration(value: Option<&str>, field: &str) -> Result<Option<Duration>, Blocked> {
    value
        .map(|v| crate::duration::parse(v).map_err(|e| Blocked { reason: INVALID_SPEC, message: format!("spec.{field}: {e}") }))
        .transpose()
}

/// Renders `spec.target.template` with placeholder values: a template that cannot work costs
/// no token request, and the Secret stays as it is.
pub(super) fn check_template(token: &NavigatorToken, labels: &TokenLabels) -> Result<(), Blocked> {
    let Some(template) = token.spec.target.as_ref().and_then(|t| t.template.as_ref()) else { return Ok(()) };
    template::check(&template.data, &token.spec.org_id, &labels.name, &labels.namespace)
        .map_err(|e| Blocked { reason: INVALID_TEMPLATE, message: format!("{e}; the Secret is left as it is") })
}

pub(super) fn jitter_seed(token: &NavigatorToken) -> u64 {
    plan::jitter_seed(token.metadata.uid.as_deref().unwrap_or_default())
}

pub(super) fn requeue_at(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => Action::requeue(at.duration_since(now).try_into().unwrap_or(Duration::ZERO).max(Duration::from_millis(100))),
        None => Action::await_change(),
    }
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
