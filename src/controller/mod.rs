//! The controller: wires the watches and caches to the NavigatorToken queue (`queue`) and, for
//! ClusterNavigatorTokens, to kube's `Controller` (`cluster`).
//!
//! A reconcile observes caches (`reconcile`), decides (`plan`, pure), then acts (`act`, with the
//! writes in `kube_io`).

/// Implements `Resource` for a type that a watch decodes from Secrets (`#[serde(from = "Secret")]`,
/// keeping only what the operator reads) and that holds its identity in `metadata`: the same API
/// resource as `Secret`.
macro_rules! watched_as_secret {
    ($type:ty) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Secret as kube::Resource>::kind(dt)
            }
            fn group(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Secret as kube::Resource>::group(dt)
            }
            fn version(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Secret as kube::Resource>::version(dt)
            }
            fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
                <k8s_openapi::api::core::v1::Secret as kube::Resource>::plural(dt)
            }
            fn meta(&self) -> &kube::api::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mod act;
mod api_token;
pub mod cluster;
mod context;
pub mod credentials;
pub mod events;
mod kube_io;
mod observe;
mod orphans;
pub mod plan;
mod queue;
mod reconcile;
mod refresh_store;
pub mod rollout;
pub mod secret;
pub mod status;
mod token_cache;
mod watches;
mod write_failure;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

pub use self::cluster::ClusterSettings;
use self::cluster::ClusterTrigger;
use self::context::{Context, PerToken, forget_token};
use self::credentials::CredentialsSecret;
use self::events::Publisher;
use self::reconcile::reconcile;
pub use self::refresh_store::PendingRefreshTokens;
use self::secret::{ManagedSecret, SecretCache};
use self::token_cache::TokenCache;
use self::watches::{SyncTracker, cached_watch, changes_after_first_list, scoped_api, strip_unread_metadata, watch};
use crate::crd::NavigatorToken;
use crate::metrics::Metrics;
use crate::token::TokenClient;
use crate::{CREDENTIALS_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Credentials Secrets per list page. kube holds a page's response text whole (twice, while it
/// copies it) before it is decoded, so a page of Secrets of 1 MiB costs about 3 MiB each at the
/// peak of a list, however little of them is kept (bench/RESULTS.md: the first list of 200 such
/// Secrets raised the peak by 16.5-16.9 MiB in pages of 4, 7.5-7.9 MiB in pages of 1). One per
/// page costs one list request per credentials Secret at each start and relist (1,000 for
/// 1,000 namespaces with one each, a few seconds at start), for the lowest peak.
const CREDENTIALS_PAGE_SIZE: u32 = 1;

/// Settings for one controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace to watch; `None` for all.
    pub namespace: Option<String>,
    /// Label selector on NavigatorTokens.
    pub selector: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Reporting instance for events (the pod name).
    pub instance: String,
    /// Also run the ClusterNavigatorToken controller (only when watching all namespaces).
    pub cluster: Option<ClusterSettings>,
}

/// How long a graceful stop may take to write the rotated refresh tokens still pending.
pub const FLUSH_ON_STOP: Duration = Duration::from_secs(5);

/// Runs the controller until `shutdown` resolves, then writes the rotated refresh tokens still
/// pending (within [`FLUSH_ON_STOP`]). `on_synced` fires once every cache has listed.
/// `pending_refresh` may be shared by several controllers, and is what `main` flushes when the
/// Lease is lost (this future is dropped then, and flushes nothing).
pub async fn run(
    client: Client,
    tokens: TokenClient,
    settings: Settings,
    metrics: Arc<Metrics>,
    pending_refresh: Arc<PendingRefreshTokens>,
    on_synced: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = settings.namespace.as_deref();
    let token_api: Api<NavigatorToken> = scoped_api(&client, ns);

    // No `any_semantic`: the API server would answer resourceVersion=0 from its watch cache and
    // ignore `limit` (10,000 NavigatorTokens in one response), and kube drops it anyway when a
    // page size is set. Lists come from etcd in the pages of 100 the memory figures assume.
    let mut token_watch = watcher::Config::default();
    if let Some(selector) = &settings.selector {
        token_watch = token_watch.labels(selector);
    }
    // kube's Store::wait_until_ready wakes only one of several waiters, so "listed" is tracked
    // here from the watch streams themselves and shared through a watch channel.
    let sync = SyncTracker::new(3);
    let mut synced = sync.receiver();
    tokio::spawn(async move {
        if synced.wait_for(|done| *done).await.is_ok() {
            on_synced();
        }
    });
    let per_token = Arc::new(PerToken::default());
    let forget = {
        let (per_token, metrics) = (per_token.clone(), metrics.clone());
        move |key: ObjectRef<NavigatorToken>| forget_token(&per_token, &metrics, &key)
    };
    let token_cache = TokenCache::default();
    let token_events =
        watch(token_api, token_watch).modify(strip_unread_metadata).inspect(token_cache.writer(forget)).inspect(sync.marker());
    let series = token_cache.clone();
    metrics.statuses.watch(move || series.series());
    // Two label-selected Secret watches: the operator never lists or caches unrelated Secrets.
    let managed_selector = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let managed_secrets = SecretCache::default();
    let managed_events =
        watch(scoped_api::<ManagedSecret>(&client, ns), managed_selector).inspect_ok(managed_secrets.writer()).inspect(sync.marker());
    // Anyone who may write a Secret can label it as credentials, at up to 1 MiB each: each is
    // reduced to a bounded `CredentialsSecret` as it is decoded, and lists come one Secret a
    // page (a page's text is held whole while it is decoded).
    let credentials_selector = watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true")).page_size(CREDENTIALS_PAGE_SIZE);
    let credentials_api: Api<CredentialsSecret> = scoped_api(&client, ns);
    let (credentials, credentials_events) = cached_watch(credentials_api, credentials_selector, &sync, |_| {});

    // One shutdown for both controllers.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let context = Arc::new(Context {
        settings_fp: secret::settings_fingerprint(tokens.options()),
        client: client.clone(),
        tokens,
        token_cache: token_cache.clone(),
        managed_secrets: managed_secrets.clone(),
        credentials: credentials.clone(),
        events: Publisher::new(client, settings.instance.clone()),
        metrics,
        per_token,
        pending_refresh: pending_refresh.clone(),
        synced: sync.receiver(),
        stopping: stopping.clone(),
    });

    // The ClusterNavigatorToken controller shares these caches: its triggers come from the same
    // streams (no second watch of Secrets).
    let cluster = settings.cluster.clone().filter(|_| ns.is_none());
    let (cluster_triggers, cluster_trigger_rx) = futures::channel::mpsc::unbounded::<ClusterTrigger>();
    let cluster_triggers = cluster.is_some().then_some(cluster_triggers);
    let to_cluster = cluster_triggers.clone();
    let managed_events = changes_after_first_list(managed_events).inspect_ok(move |secret: &ManagedSecret| {
        if let (Some(tx), Some(name)) = (&to_cluster, secret.cached.token_name.as_deref().filter(|_| secret.cached.cluster)) {
            let _ = tx.unbounded_send(ClusterTrigger::Token(name.to_owned()));
        }
    });
    let to_cluster = cluster_triggers.clone();
    let credentials_events = changes_after_first_list(credentials_events).inspect_ok(move |secret: &CredentialsSecret| {
        if let Some(tx) = &to_cluster {
            let _ = tx.unbounded_send(ClusterTrigger::Credentials(secret.namespace().unwrap_or_default(), secret.name_any()));
        }
    });
    let shutdown = async move {
        shutdown.await;
        stop.send_replace(true);
    };
    let cluster_controller = cluster.map(|cluster| {
        cluster::run(context.clone(), cluster, cluster_trigger_rx, settings.selector.clone(), settings.concurrency, stopping)
    });
    drop(cluster_triggers);

    // Refresh-token Secrets outliving their NavigatorToken (see `orphans`); dropped with the
    // controller (also when the Lease is lost).
    let sweeper = orphans::sweep_forever(context.client.clone(), settings.namespace.clone(), token_cache.clone(), sync.receiver());
    let users_of_credentials = token_cache.clone();
    let own_changes = token_cache.changes(token_events);
    let secret_changes = managed_events.filter_map(|secret| {
        let secret = secret.ok().filter(|s| !s.cached.cluster);
        std::future::ready(secret.and_then(|s| Some(queue::key(s.cached.token_name.as_deref()?, &s.namespace()?))))
    });
    let credentials_changes = credentials_events.flat_map(move |secret| {
        let users = secret.ok().map(|s| users_of_credentials.users_of_credentials(&s.namespace().unwrap_or_default(), &s.name_any()));
        futures::stream::iter(users.unwrap_or_default())
    });
    let triggers = futures::stream::select(own_changes, futures::stream::select(secret_changes, credentials_changes));
    let tokens_controller =
        queue::run(|key| token_cache.token(key), triggers, settings.concurrency, move |token| reconcile(token, context.clone()), shutdown);
    let controllers = async move {
        match cluster_controller {
            Some(cluster_controller) => drop(futures::future::join(tokens_controller, cluster_controller).await),
            None => tokens_controller.await,
        }
    };
    tokio::select! {
        () = controllers => {}
        () = sweeper => {}
    }
    // Reconciles in flight have finished; a token waiting for its retry would be lost now.
    pending_refresh.flush(tokio::time::Instant::now() + FLUSH_ON_STOP).await;
}
