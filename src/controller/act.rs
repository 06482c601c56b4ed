//! The acting half of a reconcile: the token request, the writes and the events for a decision
//! already taken.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::context::Context;
use super::events::EventType;
use super::observe::Credentials;
use super::plan::{self, Action, IssueReason, TargetSecret, requeue_at};
use super::refresh_store::RefreshFailure;
use super::rollout::{self, RolloutOutcome};
use super::secret::{self, TokenMaterial, TokenTimes};
use super::write_failure::SecretWriteFailure;
use super::{api_token, status};
use crate::crd::{CredentialsStatus, NavigatorToken, NavigatorTokenStatus, TokenSettings};
use crate::metrics::{RequestLabels, TokenLabels};
use crate::reasons::{
    API_TOKEN_EXPIRING_SOON, ISSUED, OUTCOME_SUCCESS, RECOVERED, REFRESH_BEFORE_NOT_HONOURED, REFRESH_FAILING, ROLLOUTS_RESTARTED,
    SUSPENDED, TOKEN_EXPIRED, TOKEN_VALID,
};
use crate::redact::Sensitive;
use crate::token::{ExpirySource, Grant, RetryClass, TokenError, TokenRequest};
use crate::{Error, duration};

/// One reconcile's acting half: writes and events for a decision already taken.
pub(super) struct Actor<'a> {
    pub(super) token: &'a NavigatorToken,
    pub(super) ctx: &'a Context,
    pub(super) previous: Option<&'a NavigatorTokenStatus>,
    pub(super) now: Timestamp,
    pub(super) labels: &'a TokenLabels,
    /// The target Secret as observed.
    pub(super) target: &'a TargetSecret,
    /// Fingerprint of the inputs (spec, credential values, refresh request).
    pub(super) inputs_fp: &'a str,
    /// Fingerprint of the inputs and the operator's settings, kept in status on failure.
    pub(super) attempt_fp: &'a str,
    /// Set once the rollout targets were restarted for a new token (see `rollout`).
    pub(super) rollout: Option<RolloutOutcome>,
    /// Set once CSP was asked about the API token's own expiry (see `api_token`).
    pub(super) credentials_checked: Option<Box<CredentialsStatus>>,
}

impl Actor<'_> {
    pub(super) async fn issue(
        &mut self,
        reason: IssueReason,
        credentials: &Credentials,
        validity: Option<Duration>,
        refresh_before: Option<Duration>,
    ) -> Result<Action, Error> {
        let key = ObjectRef::from_obj(self.token);
        let unstored = self.ctx.per_token.unstored.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        if let Some((_, material)) = unstored.filter(|(fp, m)| fp == self.inputs_fp && m.times.expires_at > self.now) {
            info!(?reason, "storing the token issued before the last Secret write failed");
            return self.store_new_token(material, refresh_before, reason, credentials).await;
        }
        // A refresh-token chain continues from its newest token, wherever that is kept.
        let grant = match &credentials.grant {
            Grant::RefreshToken { client_id, client_secret, refresh_token: seed } => {
                match self.ctx.pending_refresh.newest_refresh_token(self.token, seed).await {
                    Ok(newest) => {
                        Grant::RefreshToken { client_id: client_id.clone(), client_secret: client_secret.clone(), refresh_token: newest }
                    }
                    Err(RefreshFailure::Kube(error)) => return Err(error),
                    Err(RefreshFailure::Blocked(blocked)) => {
                        return self.fail(blocked.reason, &blocked.message, RetryClass::NeedsUserAction).await;
                    }
                }
            }
            other => other.clone(),
        };
        match request_token(self.ctx, &self.token.spec.settings, grant, validity).await {
            Ok(issued) => {
                info!(?reason, expires_at = %issued.material.times.expires_at, source = ?issued.source, "issued a token");
                // A rotated refresh token is kept before anything else is written: the one just
                // sent may be spent now (see `refresh_store`).
                if let (Grant::RefreshToken { refresh_token: seed, .. }, Some(rotated)) = (&credentials.grant, issued.rotated_refresh_token)
                {
                    self.ctx.pending_refresh.remember_refresh_token(self.token, seed, rotated);
                }
                self.store_new_token(issued.material, refresh_before, reason, credentials).await
            }
            Err(error) => {
                warn!(reason = error.reason(), %error, "token request failed");
                self.fail(error.reason(), &error.to_string(), error.retry_class()).await
            }
        }
    }

    /// Writes a newly issued token, after the rotated refresh token it came with (if any). When
    /// a write fails the token is kept in memory, so the retry stores it instead of requesting
    /// another for the same window.
    async fn store_new_token(
        &mut self,
        material: TokenMaterial,
        refresh_before: Option<Duration>,
        reason: IssueReason,
        credentials: &Credentials,
    ) -> Result<Action, Error> {
        let written = match self.ctx.pending_refresh.store_pending_refresh_token(self.token).await {
            Err(failure) => Err(failure),
            Ok(()) => self.write_secret(&material).await,
        };
        if let Err(failure) = written {
            let key = ObjectRef::from_obj(self.token);
            self.ctx.per_token.unstored.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (self.inputs_fp.to_owned(), material));
            return self.fail(failure.reason, &failure.message, failure.retry_class()).await;
        }
        if let Some(checked) = api_token::check(self.ctx, &self.token.spec.settings, credentials, self.previous, self.now).await {
            self.credentials_checked = Some(checked);
        }
        self.restart_rollouts(&status::rfc3339(material.times.issued_at)).await;
        self.succeed(material.times, None, None, refresh_before, Some(reason)).await
    }

    /// Applies the target Secret; a refusal comes back as a reason a person can act on.
    async fn write_secret(&self, material: &TokenMaterial) -> Result<(), SecretWriteFailure> {
        let (settings, place) = (&self.token.spec.settings, self.token.placement());
        let desired =
            secret::desired(settings, &place, &self.labels.namespace, material, self.inputs_fp).map_err(SecretWriteFailure::template)?;
        self.ctx.apply_secret(self.token, &desired).await.map_err(|error| {
            let failure = SecretWriteFailure::classify(&error, &self.labels.namespace, &self.token.target_secret_name(), &desired);
            // The classified message: the server's text with every value of the Secret taken out.
            warn!(reason = failure.reason, message = %failure.message, "writing the target Secret failed");
            failure
        })
    }

    /// Records a valid token (writing `rewrite` into the Secret first, when given).
    pub(super) async fn succeed(
        &mut self,
        times: TokenTimes,
        rewrite: Option<&TokenMaterial>,
        recheck_at: Option<Timestamp>,
        refresh_before: Option<Duration>,
        issued: Option<IssueReason>,
    ) -> Result<Action, Error> {
        if let Some(material) = rewrite
            && let Err(failure) = self.write_secret(material).await
        {
            return self.fail(failure.reason, &failure.message, failure.retry_class()).await;
        }
        // A restart owed for this token and not done (a crash, a failed patch) is replayed.
        let stamp = status::rfc3339(times.issued_at);
        if issued.is_none()
            && self.rollout.is_none()
            && rollout::replay_due(&self.ctx.per_token.rollout_replay, &self.key(), self.previous, &stamp, self.now)
        {
            self.restart_rollouts(&stamp).await;
        }
        let secret_name = self.token.target_secret_name();
        let holds = format!("Secret {secret_name} holds a token valid until {}", status::rfc3339(times.expires_at));
        let valid = self.attempt().succeeded(times, (&secret_name, self.inputs_fp), refresh_before, issued, &holds);
        let (mut status, refresh_at) = (valid.status, valid.refresh_at);
        let message = match &valid.misfit {
            Some(note) => format!("{holds}. {note}"),
            None => holds,
        };
        status::set_ready(&mut status, self.previous, true, TOKEN_VALID, message, self.token.metadata.generation, self.now);
        self.ctx.metrics.token_valid(self.labels, times.expires_at);
        self.write_status(status).await?;
        for (type_, reason, note) in &valid.events {
            self.ctx.events.publish(self.token, *type_, reason, note).await;
        }
        // Keep's plan may look again sooner than the refresh (periodic re-check), and so may a
        // restart still owed.
        let next = recheck_at.map_or(refresh_at, |at| at.min(refresh_at));
        let replay_at = rollout::replay_at(&self.ctx.per_token.rollout_replay, &self.key(), self.rollout.as_ref(), self.previous, self.now);
        Ok(requeue_at(Some(replay_at.map_or(next, |at| at.min(next))), self.now))
    }

    /// Records a failed attempt: status, the failure gauge, one Warning Event per episode, and
    /// the backoff. The token already in the Secret stays.
    pub(super) async fn fail(&mut self, reason: &str, message: &str, class: RetryClass) -> Result<Action, Error> {
        let secret_name = self.token.target_secret_name();
        let failed = self.attempt().failed(self.target.valid_token(self.now), &secret_name, "the Secret", (reason, message, class));
        let mut status = failed.status;
        let (ready, ready_reason, ready_message) = failed.ready;
        status::set_ready(&mut status, self.previous, ready, &ready_reason, ready_message, self.token.metadata.generation, self.now);
        self.ctx.metrics.token_failing(self.labels, status.consecutive_failures);
        self.write_status(status).await?;
        if failed.warn {
            self.ctx.events.publish(self.token, EventType::Warning, reason, message).await;
        }
        Ok(requeue_at(failed.requeue, self.now))
    }

    /// The token in the Secret expired while a failure was backing off: Ready turns False; the
    /// failure count and the retry time stay as they are.
    pub(super) async fn lapsed(&mut self, retry_at: Option<Timestamp>) -> Result<Action, Error> {
        let what = format!("the token in Secret {}", self.token.target_secret_name());
        let (mut status, reason, message) = status::lapsed(self.previous, &what);
        let generation = status.observed_generation;
        status::set_ready(&mut status, self.previous, false, &reason, message.clone(), generation, self.now);
        self.write_status(status).await?;
        self.ctx.events.publish(self.token, EventType::Warning, TOKEN_EXPIRED, &message).await;
        Ok(requeue_at(retry_at, self.now))
    }

    pub(super) async fn suspended(&mut self) -> Result<Action, Error> {
        let current = self.target.valid_token(self.now).map(TokenTimes::from);
        let (mut status, (ready, reason, message)) = self.attempt().suspended(current, "the Secret holds");
        status::set_ready(&mut status, self.previous, ready, &reason, message, self.token.metadata.generation, self.now);
        self.write_status(status).await?;
        // Look again at expiry so that Ready turns False when the token lapses.
        Ok(requeue_at(current.map(|c| c.expires_at), self.now))
    }

    async fn write_status(&self, mut status: NavigatorTokenStatus) -> Result<(), Error> {
        let (generation, previous) = (self.token.metadata.generation, self.previous);
        let rollout = self.rollout.as_ref().map(|o| (o.ok, o.reason, o.message.clone()));
        let has_targets = !self.token.spec.rollout_targets().is_empty();
        status::keep_condition(&mut status, previous, ROLLOUTS_RESTARTED, has_targets, rollout, generation, self.now);
        let reference = &self.token.spec.credentials_secret_ref;
        let credentials = (reference.api_token_key.is_some(), reference.name.as_str());
        api_token::keep_credentials_status(&mut status, previous, self.credentials_checked.as_deref(), credentials, generation, self.now);
        if previous == Some(&status) {
            return Ok(());
        }
        self.ctx.apply_status(self.token, &status).await?;
        // One Warning Event when `CredentialsExpiring` turns True.
        if let Some(note) = api_token::expiring_warning(&status, previous) {
            self.ctx.events.publish(self.token, EventType::Warning, API_TOKEN_EXPIRING_SOON, &note).await;
        }
        Ok(())
    }

    /// Rolls the targets for the token issued at `stamp` (see `rollout`), warning once per reason.
    async fn restart_rollouts(&mut self, stamp: &str) {
        let outcome = rollout::restart(&self.ctx.client, &self.labels.namespace, self.token.spec.rollout_targets(), stamp).await;
        if let Some((reason, note)) = outcome.as_ref().and_then(|o| rollout::warning(o, self.previous)) {
            self.ctx.events.publish(self.token, EventType::Warning, reason, note).await;
        }
        self.rollout = outcome.or(self.rollout.take());
    }

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            previous: self.previous,
            generation: self.token.metadata.generation,
            attempt_fp: self.attempt_fp,
            jitter_seed: plan::jitter_seed(self.token.metadata.uid.as_deref().unwrap_or_default()),
            now: self.now,
        }
    }

    fn key(&self) -> ObjectRef<NavigatorToken> {
        ObjectRef::from_obj(self.token)
    }
}

/// A token just issued, in the form it is stored.
pub(super) struct Issued {
    pub(super) material: TokenMaterial,
    pub(super) source: ExpirySource,
    /// The new refresh token of a refresh-token grant, when the endpoint rotated it.
    pub(super) rotated_refresh_token: Option<Sensitive>,
}

/// One token request for `settings` (of either kind) with `grant`, counted in the metrics. Times are whole seconds, as annotations and status hold
/// them, so that a restart computes exactly the same refresh time (and finds nothing to write).
pub(super) async fn request_token(
    ctx: &Context,
    spec: &TokenSettings,
    grant: Grant,
    validity: Option<Duration>,
) -> Result<Issued, TokenError> {
    let request = TokenRequest {
        endpoint_type: spec.endpoint_type(),
        base_url: spec.endpoint_url(),
        org_id: spec.org_id.clone(),
        grant,
        scope: spec.scope.as_deref().map(str::to_owned),
        validity,
        ca_bundle: spec.ca_bundle().map(str::to_owned),
    };
    let started = Instant::now();
    let result = ctx.tokens.issue(&request).await;
    let outcome = match &result {
        Ok(_) => OUTCOME_SUCCESS,
        Err(e) => e.reason(),
    };
    let endpoint_type = format!("{:?}", request.endpoint_type).replace("Csp", "CSP");
    ctx.metrics.token_requests.get_or_create(&RequestLabels { endpoint_type, outcome: outcome.into() }).inc();
    ctx.metrics.token_request_duration.observe(started.elapsed().as_secs_f64());
    let issued = result?;
    let sent_refresh_token = match &request.grant {
        Grant::RefreshToken { refresh_token, .. } => Some(refresh_token),
        _ => None,
    };
    Ok(Issued {
        rotated_refresh_token: issued.refresh_token.filter(|new| sent_refresh_token.is_some_and(|sent| new != sent)),
        material: TokenMaterial {
            access_token: issued.access_token,
            id_token: issued.id_token,
            times: TokenTimes { issued_at: whole_seconds(issued.issued_at), expires_at: whole_seconds(issued.expires_at) },
        },
        source: issued.expiry_source,
    })
}

/// What a reconcile knows when it records an attempt, failed or not (either kind).
pub(super) struct Attempt<'a> {
    pub(super) previous: Option<&'a NavigatorTokenStatus>,
    pub(super) generation: Option<i64>,
    /// Fingerprint of the attempt's inputs and settings (see `secret::attempt_fingerprint`).
    pub(super) attempt_fp: &'a str,
    pub(super) jitter_seed: u64,
    pub(super) now: Timestamp,
}

/// A valid token as status records it: the same for a NavigatorToken and a
/// ClusterNavigatorToken (pure).
pub(super) struct Succeeded {
    /// Status without the Ready condition.
    pub(super) status: NavigatorTokenStatus,
    /// When the token is to be refreshed.
    pub(super) refresh_at: Timestamp,
    /// Why spec.refreshBefore is not honoured for this token, for the Ready message.
    pub(super) misfit: Option<String>,
    /// Normal Events on an issue or recovery, and one Warning per change of the granted
    /// lifetime that leaves spec.refreshBefore no room; published after the status write.
    pub(super) events: Vec<(EventType, &'static str, String)>,
}

/// A failed attempt as status records it: the same for a NavigatorToken and a
/// ClusterNavigatorToken (pure).
pub(super) struct FailedAttempt {
    /// Status without the Ready condition.
    pub(super) status: NavigatorTokenStatus,
    /// Ready as (status, reason, message).
    pub(super) ready: (bool, String, String),
    /// The token still served: valid, and the failure one that passes by itself.
    pub(super) still_valid: Option<TokenTimes>,
    /// When to look again: the retry, or the still-valid token's expiry if sooner (Ready must
    /// not outlive the token; see `plan::Step::Lapsed`). None for rejected credentials, which
    /// are not retried by time at all (see `FailureState`).
    pub(super) requeue: Option<Timestamp>,
    /// One Warning Event per failure episode and reason; status counts the attempts.
    pub(super) warn: bool,
}

impl Attempt<'_> {
    /// Records the valid token of `times`, issued now (`issued`) or kept. `holds` says where it
    /// is ("Secret x holds a token valid until ..."), for the Warning about refreshBefore.
    pub(super) fn succeeded(
        &self,
        times: TokenTimes,
        (secret_name, inputs_fp): (&str, &str),
        refresh_before: Option<Duration>,
        issued: Option<IssueReason>,
        holds: &str,
    ) -> Succeeded {
        let refresh_at = plan::refresh_at(times.issued_at, times.expires_at, refresh_before, self.jitter_seed);
        let lifetime: Duration = times.expires_at.duration_since(times.issued_at).try_into().unwrap_or_default();
        let status = NavigatorTokenStatus {
            observed_generation: self.generation,
            secret_name: Some(secret_name.to_owned()),
            issued_at: Some(status::rfc3339(times.issued_at)),
            expires_at: Some(status::rfc3339(times.expires_at)),
            next_refresh_at: Some(status::rfc3339(refresh_at)),
            granted_lifetime: Some(duration::format(lifetime).into()),
            inputs_fingerprint: Some(inputs_fp.into()),
            ..NavigatorTokenStatus::default()
        };
        let misfit = status::refresh_before_misfit(times.issued_at, times.expires_at, refresh_before, refresh_at);
        let mut events = Vec::new();
        // Once per change of the granted lifetime, not at every refresh.
        let lifetime_changed = self.previous.and_then(|p| p.granted_lifetime.as_ref()) != status.granted_lifetime.as_ref();
        if let Some(note) = misfit.as_ref().filter(|_| issued.is_some() && lifetime_changed) {
            events.push((EventType::Warning, REFRESH_BEFORE_NOT_HONOURED, format!("{holds}. {note}")));
        }
        let failures_before = self.previous.map_or(0, |s| s.consecutive_failures);
        let note = format!("token valid until {}", status::rfc3339(times.expires_at));
        if failures_before > 0 && issued.is_some() {
            events.push((EventType::Normal, RECOVERED, format!("{note} after {failures_before} failed attempts")));
        } else if issued == Some(IssueReason::Initial) {
            events.push((EventType::Normal, ISSUED, format!("issued a {note}")));
        }
        Succeeded { status, refresh_at, misfit, events }
    }

    /// Refreshing is suspended: status stays but for the refresh time, and Ready says whether
    /// `current` (the valid token the Secrets hold, if any) is there; `holds` names them.
    pub(super) fn suspended(&self, current: Option<TokenTimes>, holds: &str) -> (NavigatorTokenStatus, (bool, String, String)) {
        let mut status = self.previous.cloned().unwrap_or_default();
        status.observed_generation = self.generation;
        status.next_refresh_at = None;
        let message = match current {
            Some(c) => format!("refreshing is suspended; the current token expires at {}", status::rfc3339(c.expires_at)),
            None => format!("refreshing is suspended and {holds} no valid token"),
        };
        (status, (current.is_some(), SUSPENDED.to_owned(), message))
    }

    /// Records `(reason, message, class)`. `current` is the valid token the Secret(s) hold,
    /// `secret_name` their name, `kept_in` how the message names them ("the Secret").
    pub(super) fn failed(
        &self,
        current: Option<&plan::CurrentToken>,
        secret_name: &str,
        kept_in: &str,
        (reason, message, class): (&str, &str, RetryClass),
    ) -> FailedAttempt {
        let failures = self.previous.map_or(0, |s| s.consecutive_failures).saturating_add(1);
        // Rounded up to whole seconds, as status keeps it: never retry before a Retry-After.
        let retry_at = ceil_seconds(plan::add(self.now, plan::retry_delay(class, failures, self.jitter_seed)));
        let scheduled = (class != RetryClass::UntilCredentialsChange).then_some(retry_at);
        // Status keeps describing the token in the Secret while it is valid; the Secret's name
        // shows from the first reconcile on (the SECRET column), valid token or not.
        let mut status = NavigatorTokenStatus {
            observed_generation: self.generation,
            secret_name: Some(secret_name.to_owned()),
            issued_at: current.map(|c| status::rfc3339(c.issued_at)),
            expires_at: current.map(|c| status::rfc3339(c.expires_at)),
            next_refresh_at: scheduled.map(status::rfc3339),
            inputs_fingerprint: Some(self.attempt_fp.into()),
            ..NavigatorTokenStatus::default()
        };
        status::record_failure(&mut status, self.previous, reason, message, self.now);
        let still_valid =
            current.filter(|_| !matches!(class, RetryClass::NeedsUserAction | RetryClass::UntilCredentialsChange)).map(TokenTimes::from);
        let ready = match still_valid {
            Some(c) => (
                true,
                REFRESH_FAILING.to_owned(),
                format!(
                    "{message}. The current token stays valid until {}; retrying at {}",
                    status::rfc3339(c.expires_at),
                    status::rfc3339(retry_at)
                ),
            ),
            None => {
                let kept = current
                    .map(|c| format!(" The previous token stays in {kept_in} until it expires at {}.", status::rfc3339(c.expires_at)))
                    .unwrap_or_default();
                (false, reason.to_owned(), format!("{message}.{kept}"))
            }
        };
        let same_failure =
            self.previous.is_some_and(|p| p.consecutive_failures > 0 && p.last_failure.as_ref().is_some_and(|f| f.reason == reason));
        let requeue = scheduled.map(|retry_at| still_valid.map_or(retry_at, |c| c.expires_at.min(retry_at)));
        FailedAttempt { status, ready, still_valid, requeue, warn: !same_failure }
    }
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Rounded up to whole seconds.
pub(super) fn ceil_seconds(t: Timestamp) -> Timestamp {
    let whole = whole_seconds(t);
    if whole < t { plan::add(whole, Duration::from_secs(1)) } else { whole }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-29T10:00:00Z";

    fn attempt(previous: Option<&NavigatorTokenStatus>) -> Attempt<'_> {
        Attempt { previous, generation: Some(2), attempt_fp: "attempt", jitter_seed: 42, now: NOW.parse().unwrap() }
    }

    /// Issued now, valid for `minutes`.
    fn times(minutes: u64) -> TokenTimes {
        let issued_at: Timestamp = NOW.parse().unwrap();
        TokenTimes { issued_at, expires_at: plan::add(issued_at, Duration::from_secs(60 * minutes)) }
    }

    fn reasons(events: &[(EventType, &'static str, String)]) -> Vec<&'static str> {
        events.iter().map(|(_, reason, _)| *reason).collect()
    }

    #[test]
    fn a_valid_token_is_recorded_with_its_events_the_same_for_both_kinds() {
        let ten_minutes = Some(Duration::from_secs(600));
        let first = attempt(None).succeeded(times(10), ("tok", "inputs"), ten_minutes, Some(IssueReason::Initial), "Secret tok holds it");
        assert_eq!(first.status.granted_lifetime.as_deref(), Some("10m"));
        assert_eq!(first.status.inputs_fingerprint.as_deref(), Some("inputs"));
        assert_eq!(first.status.observed_generation, Some(2));
        let note = first.misfit.as_deref().expect("refreshBefore 10m does not fit a 10m grant");
        assert!(note.starts_with("spec.refreshBefore 10m is more than half the 10m"), "{note}");
        assert_eq!(reasons(&first.events), [REFRESH_BEFORE_NOT_HONOURED, ISSUED]);
        assert!(first.events[0].2.starts_with("Secret tok holds it. spec.refreshBefore"), "{}", first.events[0].2);

        // The same granted lifetime again, after failures: no second warning; a recovery.
        let failing = NavigatorTokenStatus { consecutive_failures: 3, ..first.status.clone() };
        let again = attempt(Some(&failing)).succeeded(times(10), ("tok", "inputs"), ten_minutes, Some(IssueReason::Refresh), "x");
        assert_eq!(reasons(&again.events), [RECOVERED]);
        assert!(again.events[0].2.ends_with("after 3 failed attempts"), "{}", again.events[0].2);

        // A token kept (not issued) says nothing; a refreshBefore that fits has no note.
        let kept = attempt(Some(&first.status)).succeeded(times(30), ("tok", "inputs"), ten_minutes, None, "x");
        assert!(kept.events.is_empty() && kept.misfit.is_none());
    }
}
