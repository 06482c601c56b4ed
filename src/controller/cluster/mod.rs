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
mod context;
mod namespaces;
pub mod plan;
mod reconcile;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

pub use self::context::ClusterSettings;
use self::context::{ClusterContext, Remembered, labels};
use self::namespaces::{NamespaceCache, selection_changes};
use self::reconcile::{error_policy, reconcile};
use super::context::Context;
use super::watches::{SyncTracker, cached_watch, watch};
use crate::crd::ClusterNavigatorToken;

/// Logged when a watch of the ClusterNavigatorToken controller fails.
const WATCH_HINT: &str = "watching ClusterNavigatorTokens or Namespaces failed; is the ClusterNavigatorToken CRD installed and list/watch on clusternavigatortokens and namespaces granted? (--cluster-tokens=false turns ClusterNavigatorTokens off)";

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
    let namespaces = NamespaceCache::default();
    let namespace_events = watch(Api::<PartialObjectMeta<Namespace>>::all(client), watcher::Config::default())
        .inspect_ok(namespaces.writer())
        .inspect(sync.marker())
        .inspect_err(|error| warn!(%error, "{WATCH_HINT}"));
    // A Namespace change may change any selection; there are few ClusterNavigatorTokens.
    let namespace_changes = selection_changes(namespace_events);
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

/// What makes ClusterNavigatorTokens reconcile, from the watches shared with NavigatorTokens.
pub(super) enum ClusterTrigger {
    /// A Secret written for the ClusterNavigatorToken of this name changed.
    Token(String),
    /// The credentials Secret (namespace, name) changed.
    Credentials(String, String),
}
