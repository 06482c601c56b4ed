//! An in-process stand-in for the Kubernetes API server, for tests and benchmarks.
//!
//! It speaks enough of the REST API for kube-rs clients (Client, watcher/reflector/Controller,
//! event Recorder) to run unchanged against `http://127.0.0.1:PORT`: get, list (selectors,
//! pagination), watch (history replay, bookmarks, 410 Expired, streaming lists), create, update,
//! merge/strategic/JSON patches, server-side apply with field ownership, the status subresource,
//! delete with owner-reference cascade. Answers follow recordings of a real kube-apiserver v1.28
//! (the transcripts in `testkit/tests/fixtures/k8s-reference`, replayed by the tests).
//!
//! Objects are kept as `serde_json::Value`s, so any resource works; the server needs to know a
//! resource's `kind` only for list and bookmark envelopes (see [`ApiServer::register_kind`]).
//! Built in, as on the real server: name, label, annotation and Secret/ConfigMap validation,
//! NamespaceLifecycle admission (writes need an existing namespace, creates one that is not being
//! deleted), ResourceQuota object counts. A Namespace's DELETE leaves it Terminating and the
//! stand-in namespace controller empties and removes it shortly after. Metadata-only requests
//! (`Accept: …;as=PartialObjectMetadata[List];g=meta.k8s.io`) get PartialObjectMetadata, and a
//! cluster-scoped resource (a CRD with `scope: Cluster`) has no namespaced path. RBAC denials are
//! opt-in ([`ApiServer::forbid`]).
//! OpenAPI schemas, finalizers and discovery are not modelled; validation can be plugged in per
//! resource with [`ApiServer::set_validator`].
//!
//! One file per behaviour: `store` (objects, resourceVersions, garbage collection), `kinds`,
//! `objects` (JSON helpers), `validation`, `writes` (create/update/patch/delete), `apply` and
//! `managed_fields` (server-side apply), `patch`, `selectors`, `list`, `watch`, `routes` (HTTP),
//! `errors` (Status bodies), `faults`, `shared` (state behind the handles), `time`.

mod admission;
mod apply;
mod errors;
mod faults;
mod kinds;
mod list;
mod managed_fields;
mod objects;
mod patch;
mod rbac;
mod routes;
mod selectors;
mod shared;
mod store;
mod time;
mod validation;
mod watch;
mod writes;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::TcpListener;

use self::objects::group_of;
use self::routes::handle;
use self::shared::{Shared, lock};
use self::store::Res;

/// Verbs that `RequestCounts::writes` adds up.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// A snapshot of how many requests the server answered, by verb and resource.
///
/// Verbs: `get`, `list`, `watch`, `create`, `update` (PUT), `patch`, `delete`, `deletecollection`.
/// Resources are plurals, with `/status` for the status subresource (`navigatortokens/status`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestCounts {
    counts: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    /// Requests with `verb` on `resource`.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.counts.get(&(verb.to_owned(), resource.to_owned())).copied().unwrap_or(0)
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Requests that try to change something: create, update, patch, delete, deletecollection.
    pub fn writes(&self) -> u64 {
        WRITE_VERBS.iter().map(|verb| self.by_verb(verb)).sum()
    }

    /// Requests with `verb`, on any resource.
    pub fn by_verb(&self, verb: &str) -> u64 {
        self.counts.iter().filter(|((v, _), _)| v == verb).map(|(_, n)| n).sum()
    }

    /// The requests counted since `earlier` (a previous snapshot of the same server).
    pub fn delta(&self, earlier: &RequestCounts) -> RequestCounts {
        let counts = self
            .counts
            .iter()
            .filter_map(|(key, n)| {
                let before = earlier.counts.get(key).copied().unwrap_or(0);
                let diff = n.saturating_sub(before);
                (diff > 0).then(|| (key.clone(), diff))
            })
            .collect();
        RequestCounts { counts }
    }

    /// Every non-zero count as `(verb, resource, count)`, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> + '_ {
        self.counts.iter().map(|((verb, resource), n)| (verb.as_str(), resource.as_str(), *n))
    }

    fn add(&mut self, verb: &str, resource: &str) {
        *self.counts.entry((verb.to_owned(), resource.to_owned())).or_insert(0) += 1;
    }
}

impl fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (verb, resource, n) in self.iter() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{verb} {resource}={n}")?;
        }
        Ok(())
    }
}

/// A fault to inject into the next `times` requests that match `verb` and `resource`.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Verb to match (`"get"`, `"patch"`, …, see [`RequestCounts`]); `None` matches any verb.
    pub verb: Option<String>,
    /// Resource to match (`"secrets"`, `"navigatortokens/status"`); `None` matches any.
    pub resource: Option<String>,
    /// What happens to a matching request.
    pub kind: FaultKind,
    /// How many matching requests get the fault.
    pub times: u32,
}

impl Fault {
    /// A fault for the next `times` requests matching `verb` and `resource` (`None`: any).
    pub fn new(verb: Option<&str>, resource: Option<&str>, kind: FaultKind, times: u32) -> Fault {
        Fault { verb: verb.map(str::to_owned), resource: resource.map(str::to_owned), kind, times }
    }
}

/// What an injected [`Fault`] does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this HTTP status and a `Status` body whose reason matches the code
    /// (409 Conflict, 429 TooManyRequests with `Retry-After: 1`, 500 InternalError,
    /// 503 ServiceUnavailable, 504 Timeout, …). The request has no other effect.
    Status(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Handle the request normally, then wait this long before answering: a write is done (and
    /// watchers may see it) before its writer learns so, as when the answer is slow to travel.
    DelayAnswer(Duration),
}

/// One problem found by a validator registered with [`ApiServer::set_validator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The offending field, e.g. `spec.orgId`.
    pub field: String,
    /// What is wrong, e.g. `Invalid value: "x": spec.orgId in body should match '…'`.
    pub message: String,
}

/// A per-resource validation hook: returns the problems found in a would-be stored object.
type Validator = dyn Fn(&Value) -> Vec<FieldError> + Send + Sync;

/// A running test API server. Clones share the server; it shuts down when the last clone is
/// dropped or [`ApiServer::shutdown`] is called.
#[derive(Clone)]
pub struct ApiServer {
    handle: Arc<Handle>,
}

/// Owned by the `ApiServer` clones only (not by the serving task), so its drop means "no one
/// can reach this server any more".
struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer").field("url", &self.url()).finish()
    }
}

impl ApiServer {
    /// Binds 127.0.0.1 on a free port and serves on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind 127.0.0.1:0 for the test API server");
        let addr = listener.local_addr().expect("local address of the test API server");
        let shared = Arc::new(Shared::new());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let mut control = shared.control.subscribe();
        let stop = async move {
            // Err means the sender is gone, which also means shutting down.
            let _ = control.wait_for(|c| c.shutdown).await;
        };
        // Watch lines are small writes; without TCP_NODELAY they can sit in Nagle's buffer.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stop).await;
        });
        ApiServer { handle: Arc::new(Handle { shared, addr }) }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.handle.addr)
    }

    /// A kubeconfig (YAML) whose current context is this server, for running the operator's
    /// binary against it.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: t, user: {{}}}}]\n\
             contexts: [{{name: t, context: {{cluster: t, user: t}}}}]\ncurrent-context: t\n",
            self.url()
        )
    }

    /// Stops accepting connections and ends every watch; idle connections are closed.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }

    /// Creates or replaces an object directly (no request is counted, watchers are notified).
    ///
    /// Fills `uid`, `resourceVersion`, `creationTimestamp` and, for resources that have one,
    /// `generation` (bumped on replace when the spec changes); folds Secret `stringData` into
    /// `data`. The resource is found from `apiVersion` and `kind` (see [`Self::register_kind`]
    /// for kinds whose plural is not simply `kind` lowercased plus `s`). A name may be
    /// generated from `metadata.generateName`. Returns the stored object.
    ///
    /// # Panics
    ///
    /// If `obj` is not an object with `apiVersion`, `kind` and a name or generateName: that is
    /// a mistake in the test, not something to answer.
    ///
    /// No validation or admission: the namespace need not exist (writes through the API to such
    /// an object then get 404 for the namespace, as on a real server).
    pub fn insert(&self, obj: Value) -> Value {
        let stored = self.shared().with_store(|store| store.insert_direct(obj));
        match stored {
            Ok(obj) => (*obj).clone(),
            Err(message) => panic!("ApiServer::insert: {message}"),
        }
    }

    /// The stored object, if any. `api_version` is e.g. `"v1"` or `"navigator.dev/v1alpha1"`;
    /// `namespace` is `None` for cluster-scoped resources.
    pub fn get(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (Res::new(group_of(api_version), plural), namespace.unwrap_or_default().to_owned(), name.to_owned());
        self.shared().with_store(|store| store.objects.get(&key).cloned()).map(|obj| (*obj).clone())
    }

    /// Stored objects of a resource, sorted by namespace and name; `namespace: None` lists all
    /// namespaces.
    pub fn list(&self, api_version: &str, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let res = Res::new(group_of(api_version), plural);
        let objects: Vec<Arc<Value>> =
            self.shared().with_store(|store| store.scope(&res, namespace, None).map(|(_, obj)| obj.clone()).collect());
        objects.iter().map(|obj| (**obj).clone()).collect()
    }

    /// Deletes an object directly (not counted; watchers are notified), then, like the garbage
    /// collector, every object whose owners are all gone. Returns whether it existed.
    pub fn remove(&self, api_version: &str, plural: &str, namespace: Option<&str>, name: &str) -> bool {
        let key = (Res::new(group_of(api_version), plural), namespace.unwrap_or_default().to_owned(), name.to_owned());
        self.shared().with_store(|store| store.delete_with_dependents(&key, true)).is_some()
    }

    /// Declares the kind of a resource (`"widgets"` → `"Widget"`), used in list and bookmark
    /// envelopes and by [`Self::insert`] to find the plural of a kind.
    pub fn register_kind(&self, plural: &str, kind: &str) {
        self.shared().with_store(|store| store.register_kind(plural, kind));
    }

    /// Gives a resource a status subresource (NavigatorTokens have one from the start; CRDs
    /// created through the server declare theirs).
    pub fn enable_status_subresource(&self, plural: &str) {
        self.shared().with_store(|store| {
            store.status_subresources.insert(plural.to_owned());
        });
    }

    /// Checks every object of `plural` before it is stored by a request (create, update, patch,
    /// apply); problems are answered with 422 Invalid like a CRD schema violation.
    pub fn set_validator(&self, plural: &str, validator: impl Fn(&Value) -> Vec<FieldError> + Send + Sync + 'static) {
        let validator: Arc<Validator> = Arc::new(validator);
        self.shared().with_store(|store| {
            store.validators.insert(plural.to_owned(), validator);
        });
    }

    /// A snapshot of the request counts.
    pub fn counts(&self) -> RequestCounts {
        lock(&self.shared().meter).counts.clone()
    }

    /// Sets all request counts back to zero.
    pub fn reset_counts(&self) {
        lock(&self.shared().meter).counts = RequestCounts::default();
    }

    /// Queues a fault; each matching request consumes one of its `times`. Faults are matched
    /// in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            lock(&self.shared().meter).faults.push_back(fault);
        }
    }

    /// Closes every open watch stream now; clients must re-watch.
    pub fn drop_watches(&self) {
        self.shared().control.send_modify(|c| c.epoch += 1);
    }

    /// Forgets the change history: a watch from a resourceVersion older than the current one
    /// gets a 410 Expired event. Combine with [`Self::drop_watches`] to force clients to
    /// re-list (clients that are fully caught up, e.g. through a bookmark, just re-watch).
    pub fn compact(&self) {
        self.shared().with_store(|store| {
            store.oldest_rv = store.rv;
            store.history.clear();
        });
    }

    /// Forces every client to re-list: advances the resourceVersion (as writes to unrelated
    /// resources do on a real server), forgets the history and closes all watches, so that
    /// every re-watch gets 410 Expired.
    pub fn expire_watches(&self) {
        self.shared().with_store(|store| {
            store.bump();
            store.oldest_rv = store.rv;
            store.history.clear();
        });
        self.drop_watches();
    }

    /// Sets how often watches that allow bookmarks get one (default 1s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared().with_store(|store| store.bookmark_interval = interval);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().with_store(|store| store.rv)
    }

    /// How many watch streams are open right now (useful to wait until a controller watches).
    pub fn active_watches(&self) -> usize {
        self.shared().watches.load(Ordering::SeqCst)
    }

    /// Denies `verb` (`"list"`, `"patch"`, …, see [`RequestCounts`]; `"*"`: all) on `resource`
    /// (`"secrets"`, `"navigatortokens/status"`; `"*"`: all) with RBAC's 403 Forbidden until
    /// [`Self::allow`]ed again. The answer names the user of [`Self::set_user`], or the one in an
    /// `Impersonate-User` header.
    pub fn forbid(&self, verb: &str, resource: &str) {
        lock(&self.shared().rbac).denied.push((verb.to_owned(), resource.to_owned()));
    }

    /// Lifts a denial made with the same arguments by [`Self::forbid`].
    pub fn allow(&self, verb: &str, resource: &str) {
        lock(&self.shared().rbac).denied.retain(|(v, r)| (v.as_str(), r.as_str()) != (verb, resource));
    }

    /// Lifts every denial.
    pub fn allow_all(&self) {
        lock(&self.shared().rbac).denied.clear();
    }

    /// The user that RBAC denials name (default: the operator's service account,
    /// `system:serviceaccount:navigator-token-operator:navigator-token-operator`).
    pub fn set_user(&self, user: &str) {
        lock(&self.shared().rbac).user = user.to_owned();
    }

    /// Marks a Namespace as being deleted (deletionTimestamp set, phase Terminating), creating it
    /// if needed; it stays until removed. Creates in it are then refused with 403, updates and
    /// deletes still work, as on a real server while the namespace controller empties it.
    pub fn terminate_namespace(&self, name: &str) {
        let now = time::now_rfc3339();
        self.shared().with_store(|store| store.terminate_namespace(name, &now));
    }

    /// Finishes deleting a Namespace as the namespace controller does once it is terminating:
    /// every object in it is deleted (watchers see each go), then the Namespace itself.
    /// (`DELETE` of a Namespace through the API does this by itself, shortly after.)
    pub fn purge_namespace(&self, name: &str) {
        self.shared().with_store(|store| store.purge_namespace(name));
    }

    /// Delays the delivery of watch events of `plural` by `lag` (`None`: on time again), like a
    /// watch cache that has fallen behind: writes complete at once and reads (get, list) see
    /// them at once; only watchers learn late. Applies to events already queued, too.
    pub fn set_watch_lag(&self, plural: &str, lag: Option<Duration>) {
        let mut lags = lock(&self.shared().watch_lags);
        match lag {
            Some(lag) => lags.insert(plural.to_owned(), lag),
            None => lags.remove(plural),
        };
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}
