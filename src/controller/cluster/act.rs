//! The acting half of a ClusterNavigatorToken reconcile: at most one token request, the
//! per-namespace writes and deletes, at most one API-token details request (`api_token`, as
//! for a NavigatorToken), one status write, and the Events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::{info, warn};

use super::context::{ClusterContext, Trusted};
use super::plan::{NamespaceNeed, NamespaceOutcome, namespace_need, summarize};
use crate::controller::act::{Attempt, request_token};
use crate::controller::api_token;
use crate::controller::events::EventType;
use crate::controller::kube_io::with_retries;
use crate::controller::observe::{self, Blocked, Credentials, Inputs};
use crate::controller::plan::{self as token_plan, Action, IssueReason, Plan, Step, TargetSecret, requeue_at};
use crate::controller::secret::{self, TokenMaterial, TokenTimes};
use crate::controller::status;
use crate::controller::write_failure::SecretWriteFailure;
use crate::crd::cluster::ClusterNavigatorTokenStatus;
use crate::crd::{ClusterNavigatorToken, CredentialsStatus, DeletionPolicy, NavigatorTokenStatus, Placement};
use crate::metrics::TokenLabels;
use crate::reasons::{
    API_TOKEN_EXPIRING_SOON, CREDENTIALS_NOT_FOUND, INVALID_SPEC, NAMESPACE_TERMINATING, READY, SECRET_CONFLICT, SECRET_TAMPERED,
    TOKEN_EXPIRED,
};
use crate::token::{Grant, RetryClass};
use crate::{Error, FIELD_MANAGER};

/// What a reconcile observed, for the actor.
pub(super) struct Observation {
    /// Selected namespaces and what their Secret looks like, checked against the trusted token.
    pub(super) states: Vec<(String, TargetSecret)>,
    /// Selected namespaces whose copy was tampered with (see `plan::verify_copy`).
    pub(super) tampered: BTreeSet<String>,
    /// Namespaces being deleted (never written, never cleaned up: they go anyway).
    pub(super) terminating: BTreeSet<String>,
    /// Namespaces named in the spec that do not exist, sorted.
    pub(super) missing: Vec<String>,
    /// The inputs fingerprint (or, when blocked, a fingerprint of the block).
    pub(super) inputs_fp: String,
    /// Inputs and operator settings, kept in status on failure.
    pub(super) attempt_fp: String,
    /// The shared token as the plan saw it.
    pub(super) shared: TargetSecret,
    /// The token the operator trusts, if any (memory or store).
    pub(super) trusted: Option<Trusted>,
}

/// Secret writes (and deletes) in flight at once: fast enough for 1,000 namespaces, gentle on
/// the API server's priority and fairness budget.
const WRITES_IN_FLIGHT: usize = 8;
/// Look again this soon while a namespace fails or lags: its trouble may have been fixed.
const NAMESPACE_RETRY: Duration = Duration::from_secs(30);

/// One reconcile's acting half.
pub(super) struct ClusterActor<'a> {
    pub(super) cnvt: &'a ClusterNavigatorToken,
    pub(super) ctx: &'a ClusterContext,
    pub(super) now: Timestamp,
    pub(super) labels: &'a TokenLabels,
    pub(super) observed: &'a Observation,
    /// Its Secret, the same in every namespace, and itself.
    pub(super) place: &'a Placement<'a>,
    /// The credentials of a token just issued: an API token among them is asked about once
    /// the token is stored (see `api_token`).
    pub(super) issued_with: Option<Credentials>,
}

/// What the shared token's side of a reconcile decided.
struct TokenPart {
    /// Status fields about the token (Ready is set from this and the namespaces).
    status: NavigatorTokenStatus,
    /// Ready as the token's side sees it, when that overrides the namespaces' view.
    verdict: Option<(bool, String, String)>,
    /// Added to a Ready=True message: why spec.refreshBefore is not honoured.
    note: Option<String>,
    /// The current token's times, if there is a valid one.
    current: Option<TokenTimes>,
    /// Its material, when the operator trusts it (memory or store).
    material: Option<TokenMaterial>,
    /// Whether to write the current token where it is missing, and clean up.
    spread: bool,
    /// When to look again, as far as the token goes.
    requeue: Option<Timestamp>,
    /// Events to publish after the status write.
    events: Vec<(EventType, String, String)>,
}

/// Why one namespace was not written.
enum Skipped {
    /// The namespace is gone or being deleted: not selected any more, quietly.
    Leaving,
    /// A failure to report.
    Failed(String, String),
}

impl ClusterActor<'_> {
    pub(super) async fn act(&mut self, decision: Plan, inputs: Result<Inputs, Blocked>) -> Result<Action, Error> {
        // A token whose store write failed is written there before anything else.
        if let Some(trusted) = self.observed.trusted.as_ref().filter(|t| t.unstored && t.inputs_current) {
            self.ctx.store_token(self.cnvt, &self.observed.inputs_fp, &trusted.material).await;
        }
        let writable = self.observed.states.iter().any(|(_, state)| *state != TargetSecret::Foreign);
        let part = match (decision.step, inputs) {
            (Step::Suspended, _) => self.suspended(),
            (Step::WaitForRetry, _) => self.waiting(decision.next_at, false),
            (Step::Lapsed, _) => self.waiting(decision.next_at, true),
            (_, Err(mut blocked)) => {
                if blocked.reason == CREDENTIALS_NOT_FOUND {
                    let reference = &self.cnvt.spec.credentials_secret_ref;
                    blocked =
                        observe::explain_uncached_credentials(&self.ctx.base.client, &reference.secret.name, &reference.namespace).await?;
                }
                self.failed(blocked.reason, &blocked.message, RetryClass::NeedsUserAction)
            }
            (Step::Keep { .. }, Ok(Inputs { refresh_before, .. })) => match self.current_times() {
                Some(times) => {
                    let material = self.trusted(Some(times));
                    self.valid(times, material, decision.next_at, refresh_before, None)
                }
                None => self.waiting(decision.next_at, false),
            },
            // No selected namespace could take a token: none is requested.
            (Step::Issue(_) | Step::SecretConflict, Ok(_)) if !writable => self.idle(),
            (Step::Issue(reason), Ok(Inputs { credentials, refresh_before, validity })) => {
                self.issue(reason, &credentials, validity, refresh_before).await
            }
            (Step::SecretConflict, Ok(_)) => self.idle(),
        };
        let outcomes = self.fan_out(&part).await;
        // Once for all namespaces, after the new token is stored in one at least.
        let stored = outcomes.values().any(|o| *o == NamespaceOutcome::Current);
        let checked = match self.issued_with.take() {
            Some(credentials) if stored => {
                api_token::check(&self.ctx.base, &self.cnvt.spec.settings, &credentials, self.previous(), self.now).await
            }
            _ => None,
        };
        if part.spread {
            self.clean_up().await;
        }
        self.finish(part, outcomes, checked.as_deref()).await
    }

    fn previous(&self) -> Option<&NavigatorTokenStatus> {
        self.cnvt.status.as_ref().map(|s| &s.token)
    }

    /// Issue and expiry of the valid token the namespaces hold, if any.
    fn current_times(&self) -> Option<TokenTimes> {
        self.observed.shared.valid_token(self.now).map(TokenTimes::from)
    }

    /// The trusted token's material, if it is the one of `times`.
    fn trusted(&self, times: Option<TokenTimes>) -> Option<TokenMaterial> {
        self.observed.trusted.as_ref().map(|t| t.material.clone()).filter(|m| Some(m.times) == times)
    }

    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            previous: self.previous(),
            generation: self.cnvt.metadata.generation,
            attempt_fp: &self.observed.attempt_fp,
            jitter_seed: token_plan::jitter_seed(self.cnvt.metadata.uid.as_deref().unwrap_or_default()),
            now: self.now,
        }
    }

    async fn issue(
        &mut self,
        reason: IssueReason,
        credentials: &Credentials,
        validity: Option<Duration>,
        refresh_before: Option<Duration>,
    ) -> TokenPart {
        // A refresh-token chain needs a store of its newest token, which only NavigatorTokens
        // have; the CRD rejects refreshTokenKey here too, this covers objects stored before.
        if matches!(credentials.grant, Grant::RefreshToken { .. }) {
            let message = "credentialsSecretRef.refreshTokenKey is not supported on a ClusterNavigatorToken; use client credentials or an API token (apiTokenKey)";
            return self.failed(INVALID_SPEC, message, RetryClass::NeedsUserAction);
        }
        match request_token(&self.ctx.base, &self.cnvt.spec.settings, credentials.grant.clone(), validity).await {
            Ok(issued) => {
                let material = issued.material;
                info!(?reason, expires_at = %material.times.expires_at, source = ?issued.source, "issued a token");
                // Kept where no tenant can write before any namespace gets it.
                self.ctx.store_token(self.cnvt, &self.observed.inputs_fp, &material).await;
                let (grant, fingerprint) = (credentials.grant.clone(), credentials.fingerprint.clone());
                self.issued_with = Some(Credentials { grant, fingerprint });
                self.valid(material.times, Some(material), None, refresh_before, Some(reason))
            }
            Err(error) => {
                warn!(reason = error.reason(), %error, "token request failed");
                self.failed(error.reason(), &error.to_string(), error.retry_class())
            }
        }
    }

    /// The token of `times` is current: status describes it (as a NavigatorToken's does).
    fn valid(
        &self,
        times: TokenTimes,
        material: Option<TokenMaterial>,
        recheck_at: Option<Timestamp>,
        refresh_before: Option<Duration>,
        issued: Option<IssueReason>,
    ) -> TokenPart {
        let holds = format!("token valid until {}", status::rfc3339(times.expires_at));
        let valid = self.attempt().succeeded(times, (&self.place.secret_name, &self.observed.inputs_fp), refresh_before, issued, &holds);
        self.ctx.base.metrics.token_valid(self.labels, times.expires_at);
        let events = valid.events.into_iter().map(|(type_, reason, note)| (type_, reason.to_owned(), note)).collect();
        let requeue = Some(recheck_at.map_or(valid.refresh_at, |at| at.min(valid.refresh_at)));
        TokenPart { status: valid.status, verdict: None, note: valid.misfit, current: Some(times), material, spread: true, requeue, events }
    }

    /// A failed attempt, as a NavigatorToken records it: the token already in the Secrets stays.
    fn failed(&self, reason: &str, message: &str, class: RetryClass) -> TokenPart {
        let current = self.observed.shared.valid_token(self.now);
        let failed = self.attempt().failed(current, &self.place.secret_name, "the Secrets", (reason, message, class));
        self.ctx.base.metrics.token_failing(self.labels, failed.status.consecutive_failures);
        let events = failed.warn.then(|| (EventType::Warning, reason.to_owned(), message.to_owned())).into_iter().collect();
        // A transient failure still hands the valid token to new namespaces; a block does not.
        let material = self.trusted(failed.still_valid);
        TokenPart {
            status: failed.status,
            verdict: Some(failed.ready),
            note: None,
            current: failed.still_valid,
            material,
            spread: failed.still_valid.is_some(),
            requeue: failed.requeue,
            events,
        }
    }

    /// Backing off after a failure: status stays; Ready turns False when the token lapsed.
    fn waiting(&self, retry_at: Option<Timestamp>, lapsed: bool) -> TokenPart {
        let previous = self.previous();
        let mut status = previous.cloned().unwrap_or_default();
        let ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
        let current = self.current_times();
        let (verdict, events) = if lapsed {
            let (without_token, reason, message) = status::lapsed(previous, "the token");
            status = without_token;
            (Some((false, reason, message.clone())), vec![(EventType::Warning, TOKEN_EXPIRED.to_owned(), message)])
        } else {
            // The token's own trouble (a failure backing off) keeps its Ready; else the namespaces say.
            let failing = status.consecutive_failures > 0;
            (ready.filter(|_| failing).map(|c| (c.status == "True", c.reason.clone(), c.message.clone())), Vec::new())
        };
        let spread = verdict.as_ref().is_none_or(|(ok, ..)| *ok);
        let material = self.trusted(current);
        TokenPart { status, verdict, note: None, current, material, spread, requeue: retry_at, events }
    }

    fn suspended(&self) -> TokenPart {
        let current = self.current_times();
        let (status, verdict) = self.attempt().suspended(current, "the Secrets hold");
        let material = self.trusted(current);
        let requeue = current.map(|c| c.expires_at);
        TokenPart { status, verdict: Some(verdict), note: None, current, material, spread: true, requeue, events: Vec::new() }
    }

    /// Nothing to request: no namespace is selected, or every one holds someone else's Secret.
    fn idle(&self) -> TokenPart {
        let mut status = self.previous().cloned().unwrap_or_default();
        status.observed_generation = self.cnvt.metadata.generation;
        TokenPart { status, verdict: None, note: None, current: None, material: None, spread: true, requeue: None, events: Vec::new() }
    }

    /// Writes the current token to every selected namespace that lacks it (bounded concurrency),
    /// and tells how each namespace ended up.
    async fn fan_out(&self, part: &TokenPart) -> BTreeMap<String, NamespaceOutcome> {
        let mut outcomes = BTreeMap::new();
        let mut to_write = Vec::new();
        for (namespace, state) in &self.observed.states {
            let older = state.valid_token(self.now).map(|c| c.expires_at);
            let need = match (part.current, state) {
                (_, TargetSecret::Foreign) => NamespaceNeed::Conflict,
                (Some(current), _) => namespace_need(state, current),
                (None, _) => NamespaceNeed::Write,
            };
            let outcome = match need {
                NamespaceNeed::Current => NamespaceOutcome::Current,
                NamespaceNeed::Conflict => NamespaceOutcome::Failed(SECRET_CONFLICT.into(), self.conflict(namespace), None),
                _ if part.spread && part.current.is_some() => {
                    to_write.push((namespace.clone(), need, older));
                    continue;
                }
                _ => older.map_or(NamespaceOutcome::Missing, NamespaceOutcome::Lagging),
            };
            outcomes.insert(namespace.clone(), outcome);
        }
        if to_write.is_empty() {
            return outcomes;
        }
        // Only the current token is ever written, and only the one the operator trusts.
        let Some(material) = part.material.as_ref().filter(|m| Some(m.times) == part.current) else {
            for (namespace, _, older) in to_write {
                outcomes.insert(namespace, older.map_or(NamespaceOutcome::Missing, NamespaceOutcome::Lagging));
            }
            return outcomes;
        };
        let writes = futures::stream::iter(to_write)
            .map(|(namespace, need, older)| async move {
                let result = self.write(&namespace, need, material).await;
                (namespace, older, result)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        for (namespace, older, result) in writes {
            match result {
                Ok(()) => drop(outcomes.insert(namespace, NamespaceOutcome::Current)),
                Err(Skipped::Leaving) => {}
                Err(Skipped::Failed(reason, message)) => drop(outcomes.insert(namespace, NamespaceOutcome::Failed(reason, message, older))),
            }
        }
        outcomes
    }

    /// Writes the token into `namespace` (server-side apply), after checking that a Secret not in
    /// the cache is not someone else's.
    async fn write(&self, namespace: &str, need: NamespaceNeed, material: &TokenMaterial) -> Result<(), Skipped> {
        let name = &self.place.secret_name;
        if need == NamespaceNeed::CheckThenWrite {
            match self.ctx.base.uncached_secret_metadata(namespace, name).await {
                Ok(Some(existing)) if !secret::is_ours(&existing, self.place) => {
                    return Err(Skipped::Failed(SECRET_CONFLICT.into(), self.conflict(namespace)));
                }
                Ok(_) => {}
                Err(error) => {
                    // A read: nothing was sent that its message could echo.
                    let failure = SecretWriteFailure::classify(&error, namespace, name, &Secret::default());
                    return Err(Skipped::Failed(failure.reason.into(), failure.message));
                }
            }
        }
        let desired = secret::desired(&self.cnvt.spec.settings, self.place, namespace, material, &self.observed.inputs_fp)
            .map_err(SecretWriteFailure::template)
            .map_err(|f| Skipped::Failed(f.reason.into(), f.message))?;
        match self.ctx.base.apply_secret_in(namespace, &desired).await {
            Ok(_) => Ok(()),
            // The namespace went away meanwhile: not selected any more.
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Skipped::Leaving),
            Err(error) => {
                let failure = SecretWriteFailure::classify(&error, namespace, name, &desired);
                if failure.reason == NAMESPACE_TERMINATING {
                    return Err(Skipped::Leaving);
                }
                warn!(namespace, reason = failure.reason, message = %failure.message, "writing the target Secret failed");
                Err(Skipped::Failed(failure.reason.into(), failure.message))
            }
        }
    }

    fn conflict(&self, namespace: &str) -> String {
        format!(
            "Secret {namespace}/{} already exists and was not written by this operator for this ClusterNavigatorToken; it is left untouched. Delete it, or leave the namespace out of spec.target",
            self.place.secret_name
        )
    }

    /// Deletes this object's Secrets that are no longer wanted: in namespaces no longer selected
    /// (not those being deleted), or under an old secretName. Only Secrets it owns (deletionPolicy
    /// Delete), each only at the version the cache showed.
    async fn clean_up(&self) {
        if self.cnvt.spec.target.secret.deletion_policy.unwrap_or_default() != DeletionPolicy::Delete {
            return;
        }
        let uid = self.cnvt.metadata.uid.as_deref().unwrap_or_default();
        let selected: BTreeSet<&str> = self.observed.states.iter().map(|(ns, _)| ns.as_str()).collect();
        let unwanted = self.ctx.base.managed_secrets.cluster_secrets(&self.cnvt.name_any()).into_iter().filter(|(ns, name, cached)| {
            let wanted = selected.contains(ns.as_str()) && name == &self.place.secret_name;
            !wanted && !self.observed.terminating.contains(ns) && cached.owned_by(uid)
        });
        let deletes = futures::stream::iter(unwanted)
            .map(|(namespace, name, cached)| async move {
                match self.ctx.base.delete_secret_version(&namespace, &name, &cached.resource_version).await {
                    Ok(()) => info!(namespace, secret = name, "deleted the Secret of a namespace no longer selected"),
                    // A precondition failure: changed meanwhile; the next reconcile looks again.
                    Err(error) => warn!(namespace, secret = name, %error, "could not delete a Secret no longer wanted"),
                }
            })
            .buffer_unordered(WRITES_IN_FLIGHT);
        deletes.collect::<Vec<()>>().await;
    }

    /// Sets Ready from the token's side and the namespaces, writes status when it changed, and
    /// publishes the Events.
    async fn finish(
        &self,
        part: TokenPart,
        outcomes: BTreeMap<String, NamespaceOutcome>,
        checked: Option<&CredentialsStatus>,
    ) -> Result<Action, Error> {
        let expiry = part.current.map(|c| c.expires_at);
        let summary = summarize(&outcomes, &self.observed.missing, &self.place.secret_name, expiry, self.now);
        let (ready, reason, mut message) = match part.verdict {
            // The token's trouble wins, unless it still holds a token and a namespace does not.
            Some(verdict) if !verdict.0 || summary.ready.0 => verdict,
            _ => summary.ready.clone(),
        };
        if let Some(note) = part.note.as_ref().filter(|_| ready) {
            message.push_str(&format!(". {note}"));
        }
        let previous = self.previous();
        let mut token = part.status;
        let generation = self.cnvt.metadata.generation;
        status::set_ready(&mut token, previous, ready, &reason, message, generation, self.now);
        let reference = &self.cnvt.spec.credentials_secret_ref;
        let credentials_secret = format!("{}/{}", reference.namespace, reference.secret.name);
        let credentials = (reference.secret.api_token_key.is_some(), credentials_secret.as_str());
        api_token::keep_credentials_status(&mut token, previous, checked, credentials, generation, self.now);
        let listed_before: BTreeSet<(String, String)> =
            self.cnvt.status.iter().flat_map(|s| &s.namespace_failures).map(|f| (f.namespace.clone(), f.reason.clone())).collect();
        let new_failures: Vec<(String, String, String)> = summary
            .failures
            .iter()
            .filter(|f| !listed_before.contains(&(f.namespace.clone(), f.reason.clone())))
            .map(|f| (f.namespace.clone(), f.reason.clone(), f.message.clone()))
            .collect();
        let status = ClusterNavigatorTokenStatus {
            token,
            namespaces: Some(summary.counts),
            namespace_failures: summary.failures,
            missing_namespaces: summary.missing,
        };
        if self.cnvt.status.as_ref() != Some(&status) {
            self.apply_status(&status).await?;
        }
        for (type_, reason, note) in &part.events {
            self.ctx.base.events.publish(self.cnvt, *type_, reason, note).await;
        }
        if let Some(note) = api_token::expiring_warning(&status.token, previous) {
            self.ctx.base.events.publish(self.cnvt, EventType::Warning, API_TOKEN_EXPIRING_SOON, &note).await;
        }
        for (namespace, reason, message) in new_failures {
            self.ctx.base.events.publish(self.cnvt, EventType::Warning, &reason, &format!("namespace {namespace}: {message}")).await;
        }
        for namespace in &self.observed.tampered {
            let repaired = outcomes.get(namespace) == Some(&NamespaceOutcome::Current);
            let outcome = if repaired { "rewritten with the current token" } else { "not yet rewritten" };
            let note = format!(
                "namespace {namespace}: Secret {} did not hold the token this ClusterNavigatorToken issued (changed in that namespace); {outcome}",
                self.place.secret_name
            );
            warn!(namespace, secret = self.place.secret_name.as_str(), repaired, "a namespace's copy of the token was tampered with");
            self.ctx.base.events.publish(self.cnvt, EventType::Warning, SECRET_TAMPERED, &note).await;
        }
        let troubled = (outcomes.values().any(|o| *o != NamespaceOutcome::Current) && part.spread) || self.ctx.unstored(self.cnvt);
        let retry = troubled.then(|| token_plan::add(self.now, NAMESPACE_RETRY));
        let next = match (part.requeue, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(requeue_at(next, self.now))
    }

    async fn apply_status(&self, status: &ClusterNavigatorTokenStatus) -> Result<(), Error> {
        let api: Api<ClusterNavigatorToken> = Api::all(self.ctx.base.client.clone());
        let patch = json!({"apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken", "status": status});
        let (name, params, patch) = (self.cnvt.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&patch));
        let written =
            with_retries(|| api.patch_status(&name, &params, &patch)).await.map_err(Error::kube("patch ClusterNavigatorToken status"))?;
        // The next reconcile must see this status (its failure count and retry time).
        let key = ObjectRef::from_obj(&written);
        if let Some(version) = written.resource_version() {
            self.ctx.base.wait_for_cache(|| self.ctx.store.get(&key)?.resource_version(), &version).await;
        }
        Ok(())
    }
}
