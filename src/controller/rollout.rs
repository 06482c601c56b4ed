//! `spec.rolloutRestartTargets`: workloads that read the token only at start are rolled after
//! each new token, by setting an annotation on their pod template (as `kubectl rollout restart`
//! does). One patch per target per new token; the annotation's value is the token's issue time,
//! so a repeated patch for the same token changes nothing.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use super::act::Actor;
use super::events::EventType;
use super::status::{self, ROLLOUTS_RESTARTED};
use crate::FIELD_MANAGER;
use crate::crd::{NavigatorTokenStatus, RolloutKind, RolloutTarget};

/// Annotation set on the pod template of each rollout target.
pub const RESTARTED_AT_ANNOTATION: &str = "navigator.dev/restarted-at";

/// What restarting the targets for one new token came to.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RolloutOutcome {
    ok: bool,
    reason: &'static str,
    message: String,
}

impl Actor<'_> {
    /// Rolls every target for the token issued at `stamp` (RFC 3339). A missing or forbidden
    /// target is reported in the `RolloutsRestarted` condition and an Event; the token stays.
    pub(super) async fn restart_rollouts(&mut self, stamp: &str) {
        let targets = self.token.spec.rollout_targets();
        if targets.is_empty() {
            return;
        }
        let mut problems = Vec::new();
        for target in targets {
            if let Err(error) = patch_pod_template(self.ctx.client.clone(), &self.labels.namespace, target, stamp).await {
                problems.push((target, error));
            }
        }
        let what = |t: &RolloutTarget| format!("{:?} {}", t.kind, t.name);
        let outcome = match problems.first() {
            None => RolloutOutcome {
                ok: true,
                reason: "Restarted",
                message: format!("restarted {} workload(s) for the token issued at {stamp}", targets.len()),
            },
            Some((target, kube::Error::Api(s))) if s.code == 403 => RolloutOutcome {
                ok: false,
                reason: "Forbidden",
                message: format!(
                    "the operator may not patch {} in namespace {}: install the RBAC component deploy/components/rollout-restart",
                    what(target),
                    self.labels.namespace
                ),
            },
            Some((target, kube::Error::Api(s))) if s.code == 404 => RolloutOutcome {
                ok: false,
                reason: "TargetNotFound",
                message: format!("{} not found in namespace {}; the token was stored all the same", what(target), self.labels.namespace),
            },
            Some((target, error)) => RolloutOutcome {
                ok: false,
                reason: "RolloutRestartFailed",
                message: format!("restarting {} failed: {error}", what(target)),
            },
        };
        if !outcome.ok {
            warn!(reason = outcome.reason, message = %outcome.message, failed = problems.len(), "rollout restart failed");
            let reported = self.previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == ROLLOUTS_RESTARTED));
            if reported.is_none_or(|c| c.reason != outcome.reason) {
                let reason = format!("Rollout{}", outcome.reason.trim_start_matches("Rollout"));
                self.event(EventType::Warning, &reason, &outcome.message).await;
            }
        }
        self.rollout = Some(outcome);
    }

    /// Puts the `RolloutsRestarted` condition into a status about to be written: this
    /// reconcile's outcome, else the previous condition, and none without targets.
    pub(super) fn keep_rollout_condition(&self, status: &mut NavigatorTokenStatus) {
        status.conditions.retain(|c| c.type_ != ROLLOUTS_RESTARTED);
        if self.token.spec.rollout_targets().is_empty() {
            return;
        }
        match &self.rollout {
            Some(o) => {
                let generation = self.token.metadata.generation;
                status::set_condition(status, self.previous, ROLLOUTS_RESTARTED, o.ok, o.reason, o.message.clone(), generation, self.now);
            }
            None => {
                let previous = self.previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == ROLLOUTS_RESTARTED));
                status.conditions.extend(previous.cloned());
            }
        }
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
