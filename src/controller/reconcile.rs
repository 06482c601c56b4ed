//! One reconcile of a NavigatorToken: observe (`observe`, caches) → decide (`plan`, pure) → act
//! (`act`), and what follows an error. Only sequences the steps; nothing imports it but `run`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, debug, info_span, warn};

use super::act::Actor;
use super::context::{Context, forget_token};
use super::observe::{self, Inputs, failure_state};
use super::plan::{self, Action, FailureState, IssueReason, Step, TargetSecret, requeue_at};
use super::secret;
use crate::Error;
use crate::crd::NavigatorToken;
use crate::metrics::TokenLabels;
use crate::reasons::{CREDENTIALS_NOT_FOUND, SECRET_CONFLICT, SECRET_WRITE_FAILURES};
use crate::token::RetryClass;

/// How soon a reconcile looks again while the caches lag behind its own writes.
const CACHE_LAG_RECHECK: Duration = Duration::from_secs(1);

/// How soon a reconcile that failed on the Kubernetes side runs again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// One reconcile of `token`. Errors of the Kubernetes side (token errors are handled inside)
/// are logged and retried soon.
pub(super) async fn reconcile(token: Arc<NavigatorToken>, ctx: Arc<Context>) -> Action {
    let started = Instant::now();
    // Not `name`: JSON logs put the span's own name ("reconcile") under that key too.
    let span = info_span!("reconcile", namespace = token.namespace().unwrap_or_default(), navigatortoken = token.name_any());
    let result = reconcile_inner(&token, &ctx).instrument(span).await;
    ctx.metrics.reconcile_ended(started, result.is_ok());
    // Deleted while this reconcile ran: the deletion's clean-up (once the cache dropped the
    // token) may have come before what this reconcile recorded, such as a metric series.
    let key = ObjectRef::from_obj(&*token);
    if !ctx.token_cache.contains(key.namespace.as_deref().unwrap_or_default(), &key.name) {
        forget_token(&ctx.per_token, &ctx.metrics, &key);
    }
    result.unwrap_or_else(|error| {
        warn!(namespace = token.namespace().unwrap_or_default(), navigatortoken = token.name_any(), %error, "reconcile failed; retrying");
        ctx.metrics.reconcile_failed();
        Action::requeue(RETRY_AFTER_ERROR)
    })
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
    if !ctx.caches_caught_up(token).await? {
        debug!("waiting for the caches to show this operator's last writes");
        return Ok(Action::requeue(CACHE_LAG_RECHECK));
    }
    let now = Timestamp::now();
    debug!(generation = token.metadata.generation, resource_version = token.resource_version(), "reconciling");
    let previous = token.status.as_ref();

    let credentials = observe::read_credentials(&ctx.credentials, &token.spec.credentials_secret_ref, &labels.namespace);
    let place = token.placement();
    let inputs = observe::inputs(credentials, &token.spec.settings, place.target.template.as_ref(), &labels);
    let inputs_fp = match &inputs {
        Ok(i) => secret::inputs_fingerprint(&token.spec.settings, &token.spec.credentials_secret_ref, &i.credentials.fingerprint, &place),
        Err(blocked) => blocked.fingerprint(&token.spec),
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
    let secret_name = &place.secret_name;
    let cached_secret = ctx.managed_secrets.get(&labels.namespace, secret_name);
    let target = secret::observe(cached_secret.as_ref(), &place, &inputs_fp);
    let observed = observe::observed(token.spec.suspend, &inputs, target.clone(), failures, previous, token.metadata.uid.as_deref());
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
            ctx.metrics.token_failing(&labels, observed.failures.consecutive_failures);
            if let TargetSecret::Managed(Some(current)) = &target {
                ctx.metrics.token_expiry.get_or_create(&labels).set(current.expires_at.as_second());
            }
            Ok(requeue_at(plan.next_at, now))
        }
        (Step::Lapsed, _) => action.lapsed(plan.next_at).await,
        (Step::SecretConflict, _) => action.fail(SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction).await,
        (_, Err(mut blocked)) => {
            if blocked.reason == CREDENTIALS_NOT_FOUND {
                blocked =
                    observe::explain_uncached_credentials(&ctx.client, &token.spec.credentials_secret_ref.name, &labels.namespace).await?;
            }
            action.fail(blocked.reason, &blocked.message, RetryClass::NeedsUserAction).await
        }
        (Step::Keep { rewrite_secret }, Ok(Inputs { credentials, refresh_before, validity })) => {
            let kept = if rewrite_secret {
                // The cache holds fingerprints only: a rewrite (a template change, rare) reads the token once.
                let stored = ctx.uncached_secret(&labels.namespace, secret_name).await?;
                stored.and_then(|s| secret::material(&s, &place.target)).map(|m| (m.times, Some(m)))
            } else {
                cached_secret.as_ref().and_then(|s| s.times).map(|times| (times, None))
            };
            match kept {
                Some((times, rewrite)) => action.succeed(times, rewrite.as_ref(), plan.next_at, refresh_before, None).await,
                // The Secret changed since the cache saw it; a new token is the safe answer.
                None => action.issue(IssueReason::Drift, &credentials, validity, refresh_before).await,
            }
        }
        (Step::Issue(reason), Ok(Inputs { credentials, refresh_before, validity })) => {
            // A Secret that held a token and is gone may have been collected with this token, deleted
            // while its cached copy is still here: a new token would be spent on nobody.
            if cached_secret.is_none() && previous.is_some_and(|s| s.issued_at.is_some()) && !ctx.still_exists(token).await? {
                debug!("deleted: its Secret is gone and so is it");
                return Ok(Action::await_change());
            }
            if cached_secret.is_none()
                && let Some(existing) = ctx.uncached_secret(&labels.namespace, secret_name).await?
                && !secret::is_ours(&existing, &place)
            {
                return action.fail(SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction).await;
            }
            action.issue(reason, &credentials, validity, refresh_before).await
        }
    }
}
