//! `spec.rolloutRestartTargets`: workloads that read the token only at start are rolled after
//! each new token, by setting an annotation on their pod template (as `kubectl rollout restart`
//! does). One patch per target per new token; the annotation's value is the token's issue time,
//! so a repeated patch for the same token changes nothing.
//!
//! The restart owed for a token is recorded in the `RolloutsRestarted` condition (True names
//! the token it was done for) and replayed until done: after a crash between the Secret write
//! and the patches (status still describes the older token), and after a failed patch, with a
//! backoff (transient failures from 30 s up to 5 min; a missing target or missing RBAC every
//! 10 min, or at once on a spec change).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::warn;

use super::plan;
use crate::FIELD_MANAGER;
use crate::crd::{NavigatorToken, NavigatorTokenStatus, RolloutKind, RolloutTarget};
use crate::reasons::{
    FORBIDDEN, RESTARTED, ROLLOUT_FORBIDDEN, ROLLOUT_RESTART_FAILED, ROLLOUT_TARGET_NOT_FOUND, ROLLOUTS_RESTARTED, TARGET_NOT_FOUND,
};

/// Annotation set on the pod template of each rollout target.
pub const RESTARTED_AT_ANNOTATION: &str = "navigator.dev/restarted-at";

/// Shortest wait before replaying a restart whose patch failed transiently.
const REPLAY_MIN: Duration = Duration::from_secs(30);
/// Longest such wait.
const REPLAY_MAX: Duration = Duration::from_secs(300);

/// What restarting the targets for one new token came to.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RolloutOutcome {
    pub(super) ok: bool,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// The message of a successful restart: it names the token, so status records what was done.
fn done_message(count: usize, stamp: &str) -> String {
    format!("restarted {count} workload(s) for the token issued at {stamp}")
}

/// True when `previous` status owes the targets a restart for the token issued at `stamp`: the
/// last attempt failed, or the token is newer than status knows (the operator stopped between
/// writing the Secret and the patches). Targets added for a token already described by status
/// are owed nothing: they started after it.
fn owed(previous: Option<&NavigatorTokenStatus>, stamp: &str) -> bool {
    let Some(previous) = previous else { return true };
    match previous.conditions.iter().find(|c| c.type_ == ROLLOUTS_RESTARTED) {
        Some(c) if c.status == "True" => !c.message.ends_with(&format!("issued at {stamp}")),
        Some(_) => true,
        None => previous.issued_at.as_deref() != Some(stamp),
    }
}

impl RolloutOutcome {
    /// When to replay a failed restart: a person must act on a missing target or missing RBAC
    /// (slow retry); else a backoff that grows with the time the failure has lasted
    /// (`failing_since`, the condition's last transition).
    pub(super) fn replay_at(&self, failing_since: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
        if self.ok {
            return None;
        }
        let delay = match self.reason {
            FORBIDDEN | TARGET_NOT_FOUND => plan::SLOW_RETRY,
            _ => {
                let lasted: Duration = failing_since.map_or(Duration::ZERO, |t| now.duration_since(t).try_into().unwrap_or_default());
                lasted.clamp(REPLAY_MIN, REPLAY_MAX)
            }
        };
        Some(plan::add(now, delay))
    }

    /// The reason of the Warning Event about a failed restart: the condition's reason, named as
    /// a rollout's.
    fn event_reason(&self) -> &'static str {
        match self.reason {
            FORBIDDEN => ROLLOUT_FORBIDDEN,
            TARGET_NOT_FOUND => ROLLOUT_TARGET_NOT_FOUND,
            _ => ROLLOUT_RESTART_FAILED,
        }
    }
}

/// Rolls every target in `namespace` for the token issued at `stamp` (RFC 3339): the outcome
/// for the `RolloutsRestarted` condition, or none without targets. A missing or forbidden
/// target is reported there; the token stays.
pub(super) async fn restart(client: &Client, namespace: &str, targets: &[RolloutTarget], stamp: &str) -> Option<RolloutOutcome> {
    if targets.is_empty() {
        return None;
    }
    let mut problems = Vec::new();
    for target in targets {
        if let Err(error) = patch_pod_template(client.clone(), namespace, target, stamp).await {
            problems.push((target, error));
        }
    }
    let what = |t: &RolloutTarget| format!("{:?} {}", t.kind, t.name);
    let outcome = match problems.first() {
        None => RolloutOutcome { ok: true, reason: RESTARTED, message: done_message(targets.len(), stamp) },
        Some((target, kube::Error::Api(s))) if s.code == 403 => RolloutOutcome {
            ok: false,
            reason: FORBIDDEN,
            message: format!(
                "the operator may not patch {} in namespace {namespace}: install the RBAC component deploy/components/rollout-restart",
                what(target)
            ),
        },
        Some((target, kube::Error::Api(s))) if s.code == 404 => RolloutOutcome {
            ok: false,
            reason: TARGET_NOT_FOUND,
            message: format!("{} not found in namespace {namespace}; the token was stored all the same", what(target)),
        },
        Some((target, error)) => {
            RolloutOutcome { ok: false, reason: ROLLOUT_RESTART_FAILED, message: format!("restarting {} failed: {error}", what(target)) }
        }
    };
    if !outcome.ok {
        warn!(reason = outcome.reason, message = %outcome.message, failed = problems.len(), "rollout restart failed");
    }
    Some(outcome)
}

/// The Warning Event (reason, note) a failed restart is worth: one per change of the reason
/// `previous` status reported.
pub(super) fn warning<'a>(outcome: &'a RolloutOutcome, previous: Option<&NavigatorTokenStatus>) -> Option<(&'static str, &'a str)> {
    let reported = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == ROLLOUTS_RESTARTED));
    (!outcome.ok && reported.is_none_or(|c| c.reason != outcome.reason)).then(|| (outcome.event_reason(), outcome.message.as_str()))
}

/// True when the restart owed for the token issued at `stamp` is due now: owed (see [`owed`])
/// and past the backoff `replays` holds for `key`.
pub(super) fn replay_due(
    replays: &Mutex<HashMap<ObjectRef<NavigatorToken>, Timestamp>>,
    key: &ObjectRef<NavigatorToken>,
    previous: Option<&NavigatorTokenStatus>,
    stamp: &str,
    now: Timestamp,
) -> bool {
    let due = replays.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied();
    owed(previous, stamp) && due.is_none_or(|at| at <= now)
}

/// When to replay a restart still owed, if any: this reconcile's `outcome` sets it, and
/// `replays` remembers it for the reconciles in between (a status write triggers one at once),
/// whose requeue would otherwise replace it.
pub(super) fn replay_at(
    replays: &Mutex<HashMap<ObjectRef<NavigatorToken>, Timestamp>>,
    key: &ObjectRef<NavigatorToken>,
    outcome: Option<&RolloutOutcome>,
    previous: Option<&NavigatorTokenStatus>,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut replays = replays.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(outcome) = outcome {
        let previous = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == ROLLOUTS_RESTARTED));
        let failing_since = previous.filter(|c| c.status == "False").map(|c| c.last_transition_time.0);
        match outcome.replay_at(failing_since, now) {
            Some(at) => replays.insert(key.clone(), at),
            None => replays.remove(key),
        };
    }
    match replays.get(key).copied() {
        Some(at) if at > now => Some(at),
        // Due and not replayed: nothing is owed any more.
        Some(_) => replays.remove(key).and(None),
        None => None,
    }
}

async fn patch_pod_template(client: kube::Client, namespace: &str, target: &RolloutTarget, stamp: &str) -> Result<(), kube::Error> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: stamp}}}}});
    match target.kind {
        RolloutKind::Deployment => merge_patch::<Deployment>(client, namespace, &target.name, &patch).await,
        RolloutKind::StatefulSet => merge_patch::<StatefulSet>(client, namespace, &target.name, &patch).await,
        RolloutKind::DaemonSet => merge_patch::<DaemonSet>(client, namespace, &target.name, &patch).await,
    }
}

async fn merge_patch<K>(client: kube::Client, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
    Api::<K>::namespaced(client, namespace).patch(name, &params, &Patch::Merge(patch)).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failed restart's Event reason is its condition reason, named as a rollout's.
    #[test]
    fn event_reasons_name_the_condition_reason_as_a_rollouts() {
        for reason in [FORBIDDEN, TARGET_NOT_FOUND, ROLLOUT_RESTART_FAILED] {
            let outcome = RolloutOutcome { ok: false, reason, message: String::new() };
            assert_eq!(outcome.event_reason(), format!("Rollout{}", reason.trim_start_matches("Rollout")));
        }
    }
}
