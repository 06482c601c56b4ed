//! The ClusterNavigatorToken controller: one token per refresh window, written to a Secret in
//! every selected namespace.
//!
//! A reconcile observes the caches (the token's Secrets in the managed-Secret cache, Namespaces
//! from a metadata-only watch, the credentials), lets the NavigatorToken's pure plan decide on
//! the one shared token (fed with the newest token of ours any namespace holds, or the one kept
//! in memory), then acts (`act`): at most one token request, a server-side apply per namespace
//! that lacks the current token (bounded concurrency), deletes in namespaces no longer selected,
//! and one status write. The decisions of its own are pure, in `plan`.

mod act;
pub mod plan;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{Instrument, debug, info, info_span, warn};

use self::act::ClusterActor;
use self::plan::NamespaceInfo;
use super::kube_io::SecretWriteFailure;
use super::observe::{Blocked, Credentials, check_template, failure_state, parse_duration};
use super::plan::{self as token_plan, TargetSecret};
use super::secret::{self, TokenMaterial};
use super::status;
use super::watches::{SyncTracker, cached_watch, changes_after_first_list, strip_unread_metadata, watch};
use super::{ClusterTrigger, Context};
use crate::Error;
use crate::crd::ClusterNavigatorToken;
use crate::metrics::{ReconcileLabels, TokenLabels};
use crate::reasons::{CREDENTIALS_NAMESPACE_NOT_ALLOWED, INVALID_SPEC, RECONCILE_ERROR, RECONCILE_OK};

/// Logged when a watch of the ClusterNavigatorToken controller fails.
const WATCH_HINT: &str = "watching ClusterNavigatorTokens or Namespaces failed; is the ClusterNavigatorToken CRD installed and list/watch on clusternavigatortokens and namespaces granted? (--cluster-tokens=false turns ClusterNavigatorTokens off)";

/// Settings of the ClusterNavigatorToken controller.
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    /// Namespaces a ClusterNavigatorToken may read credentials from (`--cluster-credentials-namespace`,
    /// default the operator's own). Empty: every ClusterNavigatorToken is refused.
    pub credentials_namespaces: Vec<String>,
}

/// Shared state of the ClusterNavigatorToken reconciles.
pub(super) struct ClusterContext {
    /// The NavigatorToken controller's context: client, token client, managed-Secret and
    /// credentials caches, events, metrics (shared, not watched twice).
    pub(super) base: Arc<Context>,
    pub(super) store: Store<ClusterNavigatorToken>,
    pub(super) namespaces: Store<PartialObjectMeta<Namespace>>,
    pub(super) settings: ClusterSettings,
    /// The current token per ClusterNavigatorToken name, the one the operator trusts (see
    /// `store`): a namespace that starts to match gets it without a new token request.
    pub(super) remembered: Arc<Mutex<HashMap<String, Remembered>>>,
    /// True once the ClusterNavigatorToken and Namespace watches have listed.
    pub(super) synced: tokio::sync::watch::Receiver<bool>,
}

/// A token kept in memory for one ClusterNavigatorToken.
pub(super) struct Remembered {
    uid: String,
    inputs_fp: String,
    material: TokenMaterial,
    /// Written to the store; until then each reconcile tries again.
    stored: bool,
}

/// The token a ClusterNavigatorToken issued last, as the operator trusts it.
#[derive(Clone)]
pub(super) struct Trusted {
    pub(super) material: TokenMaterial,
    /// Issued from the current inputs (else the plan asks for a new one).
    pub(super) inputs_current: bool,
    /// Not yet written to the store.
    pub(super) unstored: bool,
}

impl ClusterContext {
    /// The token `cnvt` issued last, if unexpired: from memory, else (after a restart or a change
    /// of leader) from its store in the credentials namespace, read once while status says a
    /// token is valid. Never from a namespace's copy.
    async fn trusted_token(&self, cnvt: &ClusterNavigatorToken, inputs_fp: &str, now: Timestamp) -> Result<Option<Trusted>, Error> {
        let in_memory = {
            let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            remembered.get(&cnvt.name_any()).filter(|e| Some(e.uid.as_str()) == cnvt.metadata.uid.as_deref()).map(|e| Trusted {
                material: e.material.clone(),
                inputs_current: e.inputs_fp == inputs_fp,
                unstored: !e.stored,
            })
        };
        if let Some(trusted) = in_memory {
            return Ok((trusted.material.times.expires_at > now).then_some(trusted));
        }
        let claimed = cnvt.status.as_ref().and_then(|s| s.token.expires_at.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
        let namespace = &cnvt.spec.credentials_secret_ref.namespace;
        if claimed.is_none_or(|expiry| expiry <= now) || !self.settings.credentials_namespaces.contains(namespace) {
            return Ok(None);
        }
        let api: Api<Secret> = Api::namespaced(self.base.client.clone(), namespace);
        let stored =
            api.get_opt(&store::store_name(&cnvt.name_any())).await.map_err(Error::kube("get ClusterNavigatorToken store Secret"))?;
        let Some((material, stored_fp)) = stored.as_ref().and_then(|s| store::read(s, cnvt)) else {
            info!("no stored token to recover; a new token will be requested");
            return Ok(None);
        };
        if material.times.expires_at <= now {
            return Ok(None);
        }
        self.remember(cnvt, &stored_fp, &material, true);
        Ok(Some(Trusted { material, inputs_current: stored_fp == inputs_fp, unstored: false }))
    }

    fn remember(&self, cnvt: &ClusterNavigatorToken, inputs_fp: &str, material: &TokenMaterial, stored: bool) {
        let entry = Remembered { uid: cnvt.uid().unwrap_or_default(), inputs_fp: inputs_fp.to_owned(), material: material.clone(), stored };
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).insert(cnvt.name_any(), entry);
    }

    /// Writes `material` to the store, before any namespace gets it. On failure it stays in
    /// memory, marked unstored, and the next reconcile tries again.
    async fn store_token(&self, cnvt: &ClusterNavigatorToken, inputs_fp: &str, material: &TokenMaterial) {
        let desired = store::desired(cnvt, material, inputs_fp);
        let namespace = &cnvt.spec.credentials_secret_ref.namespace;
        let stored = match self.base.apply_secret_in(namespace, &desired).await {
            Ok(_) => true,
            Err(error) => {
                let failure = SecretWriteFailure::classify(&error, namespace, &desired.name_any(), &desired);
                warn!(reason = failure.reason, message = %failure.message, "could not store the token in the credentials namespace; kept in memory, retried at the next reconcile");
                false
            }
        };
        self.remember(cnvt, inputs_fp, material, stored);
    }

    /// True while the token in memory for `cnvt` waits to be written to the store.
    fn unstored(&self, cnvt: &ClusterNavigatorToken) -> bool {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).get(&cnvt.name_any()).is_some_and(|e| !e.stored)
    }

    /// Drops what is kept about a ClusterNavigatorToken that is gone.
    pub(super) fn forget(&self, name: &str) {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.base.metrics.forget(&labels(name));
    }

    fn namespace_infos(&self) -> Vec<NamespaceInfo> {
        let infos = self.namespaces.state().into_iter().map(|ns| NamespaceInfo {
            name: ns.name_any(),
            labels: ns.labels().clone(),
            terminating: ns.metadata.deletion_timestamp.is_some(),
        });
        infos.collect()
    }

    /// The credentials of `cnvt`: only from a namespace the operator allows, then read as a
    /// NavigatorToken reads them (no API call).
    fn read_credentials(&self, cnvt: &ClusterNavigatorToken) -> Result<Credentials, Blocked> {
        let reference = &cnvt.spec.credentials_secret_ref;
        if !self.settings.credentials_namespaces.contains(&reference.namespace) {
            let allowed = match self.settings.credentials_namespaces.as_slice() {
                [] => "it allows none: start it with --cluster-credentials-namespace, or with POD_NAMESPACE set".to_owned(),
                list => format!("it allows {}", list.join(", ")),
            };
            return Err(Blocked {
                reason: CREDENTIALS_NAMESPACE_NOT_ALLOWED,
                message: format!(
                    "spec.credentialsSecretRef.namespace {} is not a namespace the operator reads cluster credentials from ({allowed}). Move the credentials Secret to an allowed namespace, or have the operator's admin allow this one with --cluster-credentials-namespace",
                    reference.namespace
                ),
            });
        }
        self.base.read_credentials(&reference.secret, &reference.namespace)
    }
}

/// Runs the ClusterNavigatorToken controller until `shutdown` resolves. Its caches of Secrets and
/// credentials are the NavigatorToken controller's (`base`); changes there arrive as `triggers`.
/// It reconciles only once its own watches (ClusterNavigatorTokens, Namespaces) and the shared
/// ones have listed.
pub(super) async fn run(
    base: Arc<Context>,
    settings: ClusterSettings,
    triggers: UnboundedReceiver<ClusterTrigger>,
    selector: Option<String>,
    concurrency: u16,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = base.client.clone();
    let sync = SyncTracker::new(2);
    let remembered: Arc<Mutex<HashMap<String, Remembered>>> = Arc::default();
    let forget = {
        let (remembered, metrics) = (remembered.clone(), base.metrics.clone());
        move |key: ObjectRef<ClusterNavigatorToken>| {
            remembered.lock().unwrap_or_else(|p| p.into_inner()).remove(&key.name);
            metrics.forget(&labels(&key.name));
        }
    };
    // The shard selector applies to both kinds: each sharded instance runs its own share.
    let mut config = watcher::Config::default();
    if let Some(selector) = &selector {
        config = config.labels(selector);
    }
    let (store, events) = cached_watch(Api::<ClusterNavigatorToken>::all(client.clone()), config, &sync, forget);
    // Their Ready, refresh and API-token expiry series come from this cache (`namespace=""`).
    base.metrics.statuses.watch_cluster(store.clone());
    // These watches are what an install without the cluster kind lacks: say so (the watches
    // retry with backoff; NavigatorTokens are not held up).
    let events = events.inspect_err(|error| warn!(%error, "{WATCH_HINT}"));
    // Metadata only: a Namespace's labels and deletionTimestamp are all a selection needs.
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_events = watch(Api::<PartialObjectMeta<Namespace>>::all(client), watcher::Config::default())
        .modify(strip_unread_metadata)
        .reflect(namespace_writer)
        .inspect(sync.marker())
        .inspect_err(|error| warn!(%error, "{WATCH_HINT}"));
    // A Namespace change may change any selection; there are few ClusterNavigatorTokens.
    let namespace_changes = changes_after_first_list(namespace_events).filter_map(|n| std::future::ready(n.ok().map(|_| ())));
    let users = store.clone();
    let named = triggers.flat_map(move |trigger| {
        let refs: Vec<ObjectRef<ClusterNavigatorToken>> = match trigger {
            ClusterTrigger::Token(name) => vec![ObjectRef::new(&name)],
            ClusterTrigger::Credentials(namespace, name) => users
                .state()
                .iter()
                .filter(|c| c.spec.credentials_secret_ref.namespace == namespace && c.spec.credentials_secret_ref.secret.name == name)
                .map(|c| ObjectRef::from_obj(&**c))
                .collect(),
        };
        futures::stream::iter(refs)
    });
    let context = Arc::new(ClusterContext { base, store: store.clone(), namespaces, settings, remembered, synced: sync.receiver() });
    let stopping = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    // Never listed (no CRD, or no RBAC): nothing runs, so stop at once; kube's graceful stop
    // would wait for the watches to become ready first.
    let mut listed = sync.receiver();
    let never_listed = {
        let stop = stopping(stop.clone());
        async move {
            stop.await;
            if !*listed.borrow_and_update() {
                return;
            }
            std::future::pending::<()>().await;
        }
    };
    let controller = Controller::for_stream(events.applied_objects(), store)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_all_on(namespace_changes)
        .reconcile_on(named)
        .graceful_shutdown_on(stopping(stop))
        .run(reconcile, error_policy, context)
        .for_each(|_| async {});
    tokio::select! {
        () = controller => {}
        () = never_listed => {}
    }
}

/// Metric labels of a ClusterNavigatorToken: its name, and an empty namespace.
pub(super) fn labels(name: &str) -> TokenLabels {
    TokenLabels { namespace: String::new(), name: name.to_owned() }
}

/// Handles errors of the Kubernetes side: retry soon.
pub(super) fn error_policy(cnvt: Arc<ClusterNavigatorToken>, error: &Error, ctx: Arc<ClusterContext>) -> Action {
    warn!(clusternavigatortoken = cnvt.name_any(), %error, "reconcile failed; retrying");
    ctx.base.metrics.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_ERROR.into() }).inc();
    Action::requeue(Duration::from_secs(5))
}

pub(super) async fn reconcile(cnvt: Arc<ClusterNavigatorToken>, ctx: Arc<ClusterContext>) -> Result<Action, Error> {
    let started = Instant::now();
    let span = info_span!("reconcile", clusternavigatortoken = cnvt.name_any());
    let result = reconcile_inner(&cnvt, &ctx).instrument(span).await;
    ctx.base.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.base.metrics.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_OK.into() }).inc();
    }
    result
}

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
    let view = cnvt.view_in("");
    let previous = cnvt.status.as_ref().map(|s| &s.token);
    debug!(generation = cnvt.metadata.generation, resource_version = cnvt.resource_version(), "reconciling");

    let infos = ctx.namespace_infos();
    let terminating: BTreeSet<String> = infos.iter().filter(|ns| ns.terminating).map(|ns| ns.name.clone()).collect();
    let selection = plan::selected_namespaces(&cnvt.spec.target, &infos).map_err(|message| Blocked { reason: INVALID_SPEC, message });
    let missing = plan::missing_namespaces(&cnvt.spec.target, &infos);
    let credentials = ctx.read_credentials(cnvt);
    let refresh_before = parse_duration(cnvt.spec.refresh_before.as_deref(), "refreshBefore");
    let validity = parse_duration(cnvt.spec.validity.as_deref(), "validity");
    let template = check_template(&view, &labels);
    let selected = selection.clone().unwrap_or_default();
    let inputs = match (credentials, refresh_before, validity, template, selection) {
        (Ok(c), Ok(r), Ok(v), Ok(()), Ok(_)) => Ok((c, r, v)),
        (Err(b), ..) | (_, Err(b), ..) | (_, _, Err(b), ..) | (_, _, _, Err(b), _) | (.., Err(b)) => Err(b),
    };
    let inputs_fp = match &inputs {
        // The credentials' namespace is part of what the token depends on.
        Ok((c, ..)) => secret::inputs_fingerprint(
            &view,
            &secret::fingerprint(format!("{}/{}", cnvt.spec.credentials_secret_ref.namespace, c.fingerprint).as_bytes()),
        ),
        Err(blocked) => secret::fingerprint(format!("{}{:?}", blocked.reason, cnvt.spec).as_bytes()),
    };
    let attempt_fp = secret::attempt_fingerprint(&inputs_fp, &ctx.base.settings_fp);
    // Secret writes fail per namespace and never stop the shared token: no `secret_write`.
    let failures = failure_state(previous, &attempt_fp, cnvt.metadata.generation);
    let trusted = ctx.trusted_token(cnvt, &inputs_fp, now).await?;
    let secret_name = cnvt.target_secret_name();
    let mut tampered = BTreeSet::new();
    // The data the operator writes for the trusted token, from the token itself. Without
    // template keys it is the same in every namespace: computed once, not once per namespace.
    let per_namespace = cnvt.spec.target.secret.template.as_ref().is_some_and(|t| !t.data.is_empty());
    let everywhere = trusted.as_ref().filter(|_| !per_namespace).and_then(|t| secret::expected_data_fingerprint(&view, &t.material).ok());
    let expected_in = |ns: &str, material: &TokenMaterial| match per_namespace {
        true => secret::expected_data_fingerprint(&cnvt.view_in(ns), material).ok(),
        false => everywhere,
    };
    let states: Vec<(String, TargetSecret)> = selected
        .iter()
        .map(|ns| {
            let cached = ctx.base.managed_secrets.get(ns, &secret_name);
            let state = secret::observe_as(cached.as_ref(), &view, &inputs_fp, true);
            let (Some(trusted), Some(cached)) = (&trusted, &cached) else { return (ns.clone(), state) };
            let holds_current = || expected_in(ns, &trusted.material).is_some_and(|fp| cached.holds_data(fp));
            let (state, forged) = plan::verify_copy(state, trusted.material.times, holds_current, cached.data_edited());
            if forged {
                tampered.insert(ns.clone());
            }
            (ns.clone(), state)
        })
        .collect();
    let shared = plan::shared_token(&states, trusted.as_ref().map(|t| (t.material.times, t.inputs_current)));
    let observed = token_plan::Observed {
        suspended: cnvt.spec.suspend,
        refresh_before: inputs.as_ref().ok().and_then(|(_, r, _)| *r),
        secret: shared.clone(),
        failures,
        ready: status::is_ready(previous),
        jitter_seed: token_plan::jitter_seed(cnvt.metadata.uid.as_deref().unwrap_or_default()),
    };
    let decision = token_plan::decide(&observed, now);
    let observation = Observation { states, tampered, terminating, missing, inputs_fp, attempt_fp, shared, trusted };
    let mut actor =
        ClusterActor { cnvt, ctx, view: &view, now, labels: &labels, observed: &observation, secret_name: &secret_name, issued_with: None };
    actor.act(decision, inputs).await
}
