//! One reconcile of a ClusterNavigatorToken: observe (caches, the trusted token, each selected
//! namespace's Secret) → decide (the NavigatorToken's pure plan on the one shared token) → act
//! (`act`). Only sequences the steps; nothing imports it but `run`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action as KubeAction;
use tracing::{Instrument, debug, info_span, warn};

use super::act::{ClusterActor, Observation};
use super::context::{ClusterContext, labels};
use super::plan;
use crate::Error;
use crate::controller::observe::{self, Blocked, failure_state};
use crate::controller::plan::{self as token_plan, Action, TargetSecret};
use crate::controller::secret::{self, TokenMaterial};
use crate::crd::ClusterNavigatorToken;
use crate::reasons::INVALID_SPEC;

/// Handles errors of the Kubernetes side: retry soon.
pub(super) fn error_policy(cnvt: Arc<ClusterNavigatorToken>, error: &Error, ctx: Arc<ClusterContext>) -> KubeAction {
    warn!(clusternavigatortoken = cnvt.name_any(), %error, "reconcile failed; retrying");
    ctx.base.metrics.reconcile_failed();
    KubeAction::requeue(Duration::from_secs(5))
}

pub(super) async fn reconcile(cnvt: Arc<ClusterNavigatorToken>, ctx: Arc<ClusterContext>) -> Result<KubeAction, Error> {
    let started = Instant::now();
    let span = info_span!("reconcile", clusternavigatortoken = cnvt.name_any());
    let result = reconcile_inner(&cnvt, &ctx).instrument(span).await;
    ctx.base.metrics.reconcile_ended(started, result.is_ok());
    result.map(Into::into)
}

async fn reconcile_inner(cnvt: &ClusterNavigatorToken, ctx: &ClusterContext) -> Result<Action, Error> {
    if !ctx.base.wait_listed(&ctx.base.synced).await || !ctx.base.wait_listed(&ctx.synced).await {
        return Ok(Action::await_change());
    }
    let name = cnvt.name_any();
    if cnvt.metadata.deletion_timestamp.is_some() {
        // Its Secrets go with it by garbage collection (owner references, deletionPolicy Delete).
        ctx.forget(&name);
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let labels = labels(&name);
    let place = cnvt.placement();
    let previous = cnvt.status.as_ref().map(|s| &s.token);
    debug!(generation = cnvt.metadata.generation, resource_version = cnvt.resource_version(), "reconciling");

    let infos = ctx.namespace_infos();
    let terminating: BTreeSet<String> = infos.iter().filter(|ns| ns.terminating).map(|ns| ns.name.clone()).collect();
    let selection = plan::selected_namespaces(&cnvt.spec.target, &infos).map_err(|message| Blocked { reason: INVALID_SPEC, message });
    let missing = plan::missing_namespaces(&cnvt.spec.target, &infos);
    let credentials = ctx.read_credentials(cnvt);
    let selected = selection.clone().unwrap_or_default();
    let settings = &cnvt.spec.settings;
    let inputs =
        observe::inputs(credentials, settings, place.target.template.as_ref(), &labels).and_then(|inputs| selection.map(|_| inputs));
    let inputs_fp = match &inputs {
        // The credentials' namespace is part of what the token depends on.
        Ok(i) => {
            let reference = &cnvt.spec.credentials_secret_ref;
            let credentials_fp = secret::fingerprint(format!("{}/{}", reference.namespace, i.credentials.fingerprint).as_bytes());
            secret::inputs_fingerprint(settings, &reference.secret, &credentials_fp, &place)
        }
        Err(blocked) => blocked.fingerprint(&cnvt.spec),
    };
    let attempt_fp = secret::attempt_fingerprint(&inputs_fp, &ctx.base.settings_fp);
    // Secret writes fail per namespace and never stop the shared token: no `secret_write`.
    let failures = failure_state(previous, &attempt_fp, cnvt.metadata.generation);
    let trusted = ctx.trusted_token(cnvt, &inputs_fp, now).await?;
    let mut tampered = BTreeSet::new();
    // The data the operator writes for the trusted token, from the token itself. Without
    // template keys it is the same in every namespace: computed once, not once per namespace.
    let per_namespace = place.target.template.as_ref().is_some_and(|t| !t.data.is_empty());
    let expected = |ns: &str, material: &TokenMaterial| secret::expected_data_fingerprint(settings, &place, ns, material).ok();
    let everywhere = trusted.as_ref().filter(|_| !per_namespace).zip(selected.first()).and_then(|(t, ns)| expected(ns, &t.material));
    let states: Vec<(String, TargetSecret)> = selected
        .iter()
        .map(|ns| {
            let cached = ctx.base.managed_secrets.get(ns, &place.secret_name);
            let state = secret::observe(cached.as_ref(), &place, &inputs_fp);
            let (Some(trusted), Some(cached)) = (&trusted, &cached) else { return (ns.clone(), state) };
            let holds_current = || {
                let fp = if per_namespace { expected(ns, &trusted.material) } else { everywhere };
                fp.is_some_and(|fp| cached.holds_data(fp))
            };
            let (state, forged) = plan::verify_copy(state, trusted.material.times, holds_current, cached.data_edited());
            if forged {
                tampered.insert(ns.clone());
            }
            (ns.clone(), state)
        })
        .collect();
    let shared = plan::shared_token(&states, trusted.as_ref().map(|t| (t.material.times, t.inputs_current)));
    let observed = observe::observed(cnvt.spec.suspend, &inputs, shared.clone(), failures, previous, cnvt.metadata.uid.as_deref());
    let decision = token_plan::decide(&observed, now);
    let observation = Observation { states, tampered, terminating, missing, inputs_fp, attempt_fp, shared, trusted };
    let mut actor = ClusterActor { cnvt, ctx, now, labels: &labels, observed: &observation, place: &place, issued_with: None };
    actor.act(decision, inputs).await
}
