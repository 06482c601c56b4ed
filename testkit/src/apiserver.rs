//! An in-process stand-in for the Kubernetes API server, for tests and benchmarks.
//!
//! It speaks enough of the REST API for kube-rs clients (Client, watcher/reflector/Controller,
//! event Recorder) to run unchanged against `http://127.0.0.1:PORT`: get, list (selectors,
//! pagination), watch (history replay, bookmarks, 410 Expired, streaming lists), create, update,
//! merge/strategic/JSON patches, server-side apply with field ownership, the status subresource,
//! delete with owner-reference cascade. Answers follow the recordings of a real kube-apiserver in
//! `/work/shared/k8s-reference`.
//!
//! Objects are kept as `serde_json::Value`s, so any resource works; the server needs to know a
//! resource's `kind` only for list and bookmark envelopes (see [`ApiServer::register_kind`]).
//! Admission, RBAC, OpenAPI schemas, finalizers and discovery are not modelled; validation can be
//! plugged in per resource with [`ApiServer::set_validator`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// How many past changes are kept for watch replay; watches from older versions get 410.
const HISTORY_LIMIT: usize = 20_000;
/// Per-watcher backlog before a slow watcher is disconnected (it then re-watches).
const BROADCAST_CAPACITY: usize = 20_000;
/// Watch duration when the client sends no `timeoutSeconds` (the real server picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bookmark period for watches that allow bookmarks, until changed.
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Largest request body accepted (the real server's limit is 3 MiB).
const MAX_BODY: usize = 8 << 20;
/// Verbs that `RequestCounts::writes` adds up.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
/// Resources whose objects carry no `metadata.generation`.
const NO_GENERATION: [&str; 7] = ["secrets", "configmaps", "events", "leases", "namespaces", "serviceaccounts", "endpoints"];
/// Kinds known from the start (plural, kind); more come from CRDs, writes and `register_kind`.
const BUILTIN_KINDS: [(&str, &str); 11] = [
    ("secrets", "Secret"),
    ("configmaps", "ConfigMap"),
    ("events", "Event"),
    ("leases", "Lease"),
    ("navigatortokens", "NavigatorToken"),
    ("customresourcedefinitions", "CustomResourceDefinition"),
    ("namespaces", "Namespace"),
    ("pods", "Pod"),
    ("services", "Service"),
    ("serviceaccounts", "ServiceAccount"),
    ("deployments", "Deployment"),
];
/// Metadata fields that field managers can own; the rest of metadata is the server's.
const OWNED_METADATA: [&str; 5] = ["labels", "annotations", "finalizers", "ownerReferences", "generateName"];
/// Alphabet of generated name suffixes (the real server's: no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

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

    fn matches(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb) && self.resource.as_deref().is_none_or(|r| r == resource)
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

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------------------------

/// State reachable from the request handlers.
struct Shared {
    store: Mutex<Store>,
    meter: Mutex<Meter>,
    /// Every change of this value ends all open watches; `shutdown` also stops the server.
    control: watch::Sender<Control>,
    watches: AtomicUsize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Control {
    epoch: u64,
    shutdown: bool,
}

#[derive(Default)]
struct Meter {
    counts: RequestCounts,
    faults: VecDeque<Fault>,
}

/// Locks a mutex, carrying on after a panic elsewhere: the data stays usable for a test server.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new() -> Shared {
        Shared {
            store: Mutex::new(Store::new()),
            meter: Mutex::new(Meter::default()),
            control: watch::Sender::new(Control::default()),
            watches: AtomicUsize::new(0),
        }
    }

    /// Runs `f` with the store locked; the lock is released before the result is used, so
    /// serialisation of responses happens outside it.
    fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut lock(&self.store))
    }

    fn shutdown(&self) {
        self.control.send_modify(|c| {
            c.shutdown = true;
            c.epoch += 1;
        });
    }

    fn count(&self, verb: &str, resource: &str) {
        lock(&self.meter).counts.add(verb, resource);
    }

    fn take_fault(&self, verb: &str, resource: &str) -> Option<FaultKind> {
        let mut meter = lock(&self.meter);
        let index = meter.faults.iter().position(|f| f.matches(verb, resource))?;
        let fault = &mut meter.faults[index];
        let kind = fault.kind.clone();
        fault.times -= 1;
        if fault.times == 0 {
            meter.faults.remove(index);
        }
        Some(kind)
    }
}

/// A resource: API group (empty for the core group) and plural.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Res {
    group: String,
    plural: String,
}

impl Res {
    fn new(group: &str, plural: &str) -> Res {
        Res { group: group.to_owned(), plural: plural.to_owned() }
    }

    /// `secrets`, `navigatortokens.navigator.dev`: how the real server names resources in
    /// messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    fn is_secret(&self) -> bool {
        self.group.is_empty() && self.plural == "secrets"
    }
}

/// Store key: resource, namespace (empty for cluster-scoped objects), name. The ordering makes
/// every resource, and every namespace within it, a contiguous range.
type ObjKey = (Res, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Added,
    Modified,
    Deleted,
}

/// One committed change, kept for watch replay and broadcast to live watches.
struct Change {
    rv: u64,
    key: ObjKey,
    op: Op,
    object: Arc<Value>,
    /// The object before a modification or deletion: label-selector watches need it to turn a
    /// MODIFIED into ADDED/DELETED when the object starts/stops matching.
    previous: Option<Arc<Value>>,
    /// The object serialised once, shared by all watchers.
    json: OnceLock<String>,
}

impl Change {
    fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(&*self.object).unwrap_or_default())
    }
}

struct Store {
    /// Global resourceVersion: that of the last change.
    rv: u64,
    objects: BTreeMap<ObjKey, Arc<Value>>,
    by_uid: HashMap<String, ObjKey>,
    /// Owner uid → objects that list it in `ownerReferences`.
    dependents: HashMap<String, BTreeSet<ObjKey>>,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this have missed forgotten changes (410).
    oldest_rv: u64,
    events: broadcast::Sender<Arc<Change>>,
    kinds: HashMap<String, String>,
    plurals: HashMap<String, String>,
    status_subresources: HashSet<String>,
    validators: HashMap<String, Arc<Validator>>,
    bookmark_interval: Duration,
    rng: u64,
}

/// Who is writing, and how.
struct WriteCtx {
    manager: String,
    dry_run: bool,
    now: String,
}

/// Which part of an object a write may change, and hence which fields its manager owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The main resource; with a status subresource, `.status` is out of reach.
    Main { has_status: bool },
    /// The status subresource: only `.status`.
    Status,
}

type Written = Result<(StatusCode, Arc<Value>), ApiError>;

impl Store {
    fn new() -> Store {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0x5eed);
        let mut store = Store {
            rv: 1,
            objects: BTreeMap::new(),
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
            history: VecDeque::new(),
            oldest_rv: 0,
            events,
            kinds: HashMap::new(),
            plurals: HashMap::new(),
            status_subresources: HashSet::from(["navigatortokens".to_owned()]),
            validators: HashMap::new(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            rng: seed,
        };
        for (plural, kind) in BUILTIN_KINDS {
            store.register_kind(plural, kind);
        }
        store
    }

    // --- kinds -------------------------------------------------------------------------------

    fn register_kind(&mut self, plural: &str, kind: &str) {
        self.kinds.insert(plural.to_owned(), kind.to_owned());
        self.plurals.insert(kind.to_owned(), plural.to_owned());
    }

    /// The kind of a resource, guessed from the plural when nobody said.
    fn kind_for(&self, plural: &str) -> String {
        if let Some(kind) = self.kinds.get(plural) {
            return kind.clone();
        }
        let singular = plural.strip_suffix('s').unwrap_or(plural);
        let mut chars = singular.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    /// The plural of a kind, guessed from the kind when nobody said.
    fn plural_for(&self, kind: &str) -> String {
        if let Some(plural) = self.plurals.get(kind) {
            return plural.clone();
        }
        let lower = kind.to_lowercase();
        if let Some(stem) = lower.strip_suffix('y') {
            format!("{stem}ies")
        } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
            format!("{lower}es")
        } else {
            format!("{lower}s")
        }
    }

    /// Checks the `kind` a client sent for a resource; an unknown resource learns it.
    fn check_kind(&mut self, res: &Res, kind: &str) -> Result<(), ApiError> {
        match self.kinds.get(&res.plural) {
            Some(expected) if expected != kind => {
                Err(ApiError::bad_request(format!("the kind in the data ({kind}) does not match the expected kind ({expected})")))
            }
            Some(_) => Ok(()),
            None => {
                self.register_kind(&res.plural, kind);
                Ok(())
            }
        }
    }

    /// A CRD written to the server declares its resource's kind and status subresource.
    fn learn_from_crd(&mut self, res: &Res, obj: &Value) {
        if res.plural != "customresourcedefinitions" {
            return;
        }
        let names = obj.pointer("/spec/names");
        let plural = names.and_then(|n| n.get("plural")).and_then(Value::as_str);
        let kind = names.and_then(|n| n.get("kind")).and_then(Value::as_str);
        if let (Some(plural), Some(kind)) = (plural, kind) {
            self.register_kind(plural, kind);
            let versions = obj.pointer("/spec/versions").and_then(Value::as_array);
            let has_status = versions.is_some_and(|versions| versions.iter().any(|v| v.pointer("/subresources/status").is_some()));
            if has_status {
                self.status_subresources.insert(plural.to_owned());
            }
        }
    }

    fn has_status(&self, plural: &str) -> bool {
        self.status_subresources.contains(plural)
    }

    // --- randomness --------------------------------------------------------------------------

    /// splitmix64: plenty for uids and name suffixes, and no dependency.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn new_uid(&mut self) -> String {
        let a = self.next_random();
        let b = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// `generateName` plus five random characters, unused in the namespace.
    fn generate_name(&mut self, res: &Res, namespace: &str, prefix: &str) -> Option<String> {
        for _ in 0..100 {
            let suffix: String = (0..5)
                .map(|_| {
                    let index = (self.next_random() % NAME_ALPHABET.len() as u64) as usize;
                    char::from(NAME_ALPHABET[index])
                })
                .collect();
            let name = format!("{prefix}{suffix}");
            let key = (res.clone(), namespace.to_owned(), name);
            if !self.objects.contains_key(&key) {
                return Some(key.2);
            }
        }
        None
    }

    // --- committing changes ------------------------------------------------------------------

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores an object that already carries its new resourceVersion (`self.rv`) and
    /// publishes the change.
    fn put(&mut self, key: ObjKey, object: Value) -> Arc<Value> {
        let object = Arc::new(object);
        let previous = self.objects.insert(key.clone(), object.clone());
        if let Some(previous) = &previous {
            self.unindex(&key, previous);
        }
        self.index(&key, &object);
        self.learn_from_crd(&key.0, &object);
        let op = if previous.is_some() { Op::Modified } else { Op::Added };
        self.publish(op, key, object.clone(), previous);
        object
    }

    fn publish(&mut self, op: Op, key: ObjKey, object: Arc<Value>, previous: Option<Arc<Value>>) {
        let change = Arc::new(Change { rv: self.rv, key, op, object, previous, json: OnceLock::new() });
        if self.history.len() >= HISTORY_LIMIT
            && let Some(forgotten) = self.history.pop_front()
        {
            self.oldest_rv = forgotten.rv;
        }
        self.history.push_back(change.clone());
        // An error only means that nobody is watching.
        let _ = self.events.send(change);
    }

    fn index(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid") {
            self.by_uid.insert(uid.to_owned(), key.clone());
        }
        for owner in owner_uids(obj) {
            self.dependents.entry(owner).or_default().insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = meta_str(obj, "uid")
            && self.by_uid.get(uid) == Some(key)
        {
            self.by_uid.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// Removes one object; the DELETED event carries the final state at a new resourceVersion,
    /// as the real server does.
    fn remove_one(&mut self, key: &ObjKey) -> Option<Arc<Value>> {
        let previous = self.objects.remove(key)?;
        self.unindex(key, &previous);
        let rv = self.bump();
        let mut gone = (*previous).clone();
        set_meta(&mut gone, "resourceVersion", Value::String(rv.to_string()));
        let gone = Arc::new(gone);
        self.publish(Op::Deleted, key.clone(), gone.clone(), Some(previous));
        Some(gone)
    }

    /// Deletes an object and, with `cascade`, like the background garbage collector, every
    /// object left without any existing owner, transitively.
    fn delete_with_dependents(&mut self, key: &ObjKey, cascade: bool) -> Option<Arc<Value>> {
        let gone = self.remove_one(key)?;
        if !cascade {
            return Some(gone);
        }
        let mut owners: VecDeque<String> = meta_str(&gone, "uid").map(str::to_owned).into_iter().collect();
        while let Some(owner) = owners.pop_front() {
            let Some(dependents) = self.dependents.remove(&owner) else {
                continue;
            };
            for dependent in dependents {
                let still_owned =
                    self.objects.get(&dependent).is_some_and(|obj| owner_uids(obj).iter().any(|uid| self.by_uid.contains_key(uid)));
                if still_owned {
                    continue;
                }
                if let Some(removed) = self.remove_one(&dependent)
                    && let Some(uid) = meta_str(&removed, "uid")
                {
                    owners.push_back(uid.to_owned());
                }
            }
        }
        Some(gone)
    }

    /// The objects of a resource, in one namespace or all, after `after` (exclusive).
    fn scope<'a>(
        &'a self,
        res: &'a Res,
        namespace: Option<&'a str>,
        after: Option<(&str, &str)>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Arc<Value>)> + 'a {
        let lower = match after {
            Some((ns, name)) => Bound::Excluded((res.clone(), ns.to_owned(), name.to_owned())),
            None => Bound::Included((res.clone(), namespace.unwrap_or_default().to_owned(), String::new())),
        };
        self.objects.range((lower, Bound::Unbounded)).take_while(move |(key, _)| key.0 == *res && namespace.is_none_or(|ns| key.1 == ns))
    }

    fn validate(&self, res: &Res, obj: &Value) -> Result<(), ApiError> {
        let Some(validator) = self.validators.get(&res.plural) else {
            return Ok(());
        };
        let errors = validator(obj);
        if errors.is_empty() {
            return Ok(());
        }
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = meta_str(obj, "name").unwrap_or_default();
        Err(ApiError::invalid(&res.group, kind, name, &errors))
    }

    /// Server-set metadata of a new object.
    fn stamp_new(&mut self, res: &Res, obj: &mut Value, now: &str) {
        let uid = self.new_uid();
        if let Some(meta) = meta_mut(obj) {
            for field in ["resourceVersion", "deletionTimestamp", "selfLink", "generation"] {
                meta.remove(field);
            }
            meta.insert("uid".into(), Value::String(uid));
            meta.insert("creationTimestamp".into(), Value::String(now.to_owned()));
            if tracks_generation(&res.plural) {
                meta.insert("generation".into(), json!(1));
            }
        }
    }

    // --- direct access -----------------------------------------------------------------------

    fn insert_direct(&mut self, obj: Value) -> Result<Arc<Value>, String> {
        let Value::Object(mut map) = obj else {
            return Err("the object must be a JSON object".into());
        };
        let api_version = map.get("apiVersion").and_then(Value::as_str).ok_or("apiVersion is missing")?.to_owned();
        let kind = map.get("kind").and_then(Value::as_str).ok_or("kind is missing")?.to_owned();
        let res = Res::new(group_of(&api_version), &self.plural_for(&kind));
        let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        let namespace = meta.get("namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
        let given_name = meta.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
        let prefix = meta.get("generateName").and_then(Value::as_str).map(str::to_owned);
        let name = match (given_name, prefix) {
            (Some(name), _) => name,
            (None, Some(prefix)) => self.generate_name(&res, &namespace, &prefix).ok_or("no free generated name")?,
            (None, None) => return Err("metadata.name or generateName is required".into()),
        };
        let key = (res.clone(), namespace, name.clone());
        let mut obj = Value::Object(map);
        if res.is_secret() {
            fold_string_data(&mut obj);
        }
        let existing = self.objects.get(&key).cloned();
        let new_uid = self.new_uid();
        let now = now_rfc3339();
        let generation = if tracks_generation(&res.plural) {
            Some(match (&existing, obj.pointer("/metadata/generation")) {
                (_, Some(given)) => given.clone(),
                (Some(old), None) => {
                    let old_generation = generation_of(old);
                    json!(old_generation + u64::from(spec_changed(old, &obj)))
                }
                (None, None) => json!(1),
            })
        } else {
            None
        };
        let rv = self.bump();
        let Some(meta) = meta_mut(&mut obj) else {
            return Err("metadata must be an object".into());
        };
        meta.insert("name".into(), Value::String(name));
        let uid = existing.as_deref().and_then(|old| meta_str(old, "uid")).map(str::to_owned).unwrap_or(new_uid);
        meta.entry("uid").or_insert(Value::String(uid));
        let created = existing.as_deref().and_then(|old| meta_str(old, "creationTimestamp")).map(str::to_owned).unwrap_or(now);
        meta.entry("creationTimestamp").or_insert(Value::String(created));
        if let Some(generation) = generation {
            meta.insert("generation".into(), generation);
        }
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        Ok(self.put(key, obj))
    }

    // --- read requests -----------------------------------------------------------------------

    fn get_object(&self, t: &Target, name: &str) -> Result<Arc<Value>, ApiError> {
        self.objects.get(&t.key(name)).cloned().ok_or_else(|| ApiError::not_found(&t.res, name))
    }

    fn list_page(&self, t: &Target, query: &Query) -> Result<ListPage, ApiError> {
        let filter = Filter::new(t, query)?;
        let limit = match query.get("limit") {
            None | Some("") => 0,
            Some(limit) => limit.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        };
        let (rv, after) = match query.get("continue") {
            Some(token) if !token.is_empty() => {
                let (rv, ns, name) = decode_continue(token)?;
                (rv, Some((ns, name)))
            }
            _ => (self.rv, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        let after = after.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str()));
        let mut last: Option<&ObjKey> = None;
        for (key, obj) in self.scope(&t.res, t.namespace.as_deref(), after) {
            if !filter.matches(obj) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                // Only promise another page when there is one.
                next = last.map(|key| encode_continue(rv, &key.1, &key.2));
                break;
            }
            items.push(obj.clone());
            last = Some(key);
        }
        Ok(ListPage { kind: format!("{}List", self.kind_for(&t.res.plural)), api_version: t.api_version(), rv, items, next })
    }

    // --- write requests ----------------------------------------------------------------------

    fn create(&mut self, t: &Target, body: Value, ctx: &WriteCtx) -> Written {
        let mut map = into_object(body)?;
        self.check_type_meta(t, &mut map)?;
        check_identity(t, None, &mut map)?;
        let namespace = t.namespace.clone().unwrap_or_default();
        let given_name =
            map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
        let prefix =
            map.get("metadata").and_then(|m| m.get("generateName")).and_then(Value::as_str).filter(|p| !p.is_empty()).map(str::to_owned);
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let name = match (given_name, prefix) {
            (Some(name), _) => name,
            (None, Some(prefix)) => self.generate_name(&t.res, &namespace, &prefix).ok_or_else(|| {
                ApiError::new(
                    409,
                    "AlreadyExists",
                    format!(
                        "{} \"{prefix}\" already exists, the server was not able to generate a unique name for the object",
                        t.res.qualified()
                    ),
                )
            })?,
            (None, None) => {
                return Err(ApiError::invalid(
                    &t.res.group,
                    &kind,
                    "",
                    &[FieldError { field: "metadata.name".into(), message: "Required value: name or generateName is required".into() }],
                ));
            }
        };
        validate_name(&t.res, &kind, &name)?;
        let key = t.key(&name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&t.res, &name));
        }
        let mut obj = Value::Object(map);
        set_meta(&mut obj, "name", Value::String(name));
        let has_status = self.has_status(&t.res.plural);
        if has_status && let Some(map) = obj.as_object_mut() {
            // Status is written through its subresource only.
            map.remove("status");
        }
        if t.res.is_secret() {
            fold_string_data(&mut obj);
        }
        let mut entries = client_managed_fields(&obj, None).unwrap_or_default();
        if entries.is_empty() {
            let writer = Writer { manager: &ctx.manager, api_version: &t.api_version(), subresource: "", now: &ctx.now };
            let view = owned_view(&obj, Scope::Main { has_status });
            record_update(&mut entries, &Map::new(), &view, &writer);
        }
        set_managed_fields(&mut obj, entries);
        self.commit_new(t, key, obj, ctx)
    }

    /// Stores a new object: server metadata, validation, resourceVersion, ADDED event.
    fn commit_new(&mut self, t: &Target, key: ObjKey, mut obj: Value, ctx: &WriteCtx) -> Written {
        self.stamp_new(&t.res, &mut obj, &ctx.now);
        self.validate(&t.res, &obj)?;
        if ctx.dry_run {
            return Ok((StatusCode::CREATED, Arc::new(obj)));
        }
        let rv = self.bump();
        set_meta(&mut obj, "resourceVersion", Value::String(rv.to_string()));
        Ok((StatusCode::CREATED, self.put(key, obj)))
    }

    fn replace(&mut self, t: &Target, name: &str, body: Value, ctx: &WriteCtx) -> Written {
        let old = self.get_object(t, name)?;
        let mut map = into_object(body)?;
        self.check_type_meta(t, &mut map)?;
        check_identity(t, Some(name), &mut map)?;
        let candidate = Value::Object(map);
        check_precondition(t, name, &old, &candidate)?;
        self.write_update(t, &old, candidate, ctx)
    }

    fn patch(&mut self, t: &Target, name: &str, patch: &PatchBody, ctx: &WriteCtx) -> Written {
        let old = self.get_object(t, name)?;
        let mut candidate = (*old).clone();
        match patch {
            PatchBody::Merge(patch) => merge_patch(&mut candidate, patch),
            PatchBody::Json(ops) => json_patch(&mut candidate, ops).map_err(|message| ApiError::new(422, "Invalid", message))?,
        }
        let Value::Object(mut map) = candidate else {
            return Err(ApiError::new(422, "Invalid", "the patched object is not a JSON object"));
        };
        self.check_type_meta(t, &mut map)?;
        check_identity(t, Some(name), &mut map)?;
        let candidate = Value::Object(map);
        check_precondition(t, name, &old, &candidate)?;
        self.write_update(t, &old, candidate, ctx)
    }

    /// The common tail of PUT and non-apply patches ("Update" operations).
    fn write_update(&mut self, t: &Target, old: &Arc<Value>, mut candidate: Value, ctx: &WriteCtx) -> Written {
        let has_status = self.has_status(&t.res.plural);
        let scope = if t.status { Scope::Status } else { Scope::Main { has_status } };
        if t.status {
            // The status subresource changes nothing but the status.
            let mut merged = (**old).clone();
            set_top(&mut merged, "status", candidate.get("status").cloned());
            candidate = merged;
        } else if has_status {
            set_top(&mut candidate, "status", old.get("status").cloned());
        }
        restore_identity(&mut candidate, old);
        if t.res.is_secret() {
            fold_string_data(&mut candidate);
        }
        // A client may rewrite managedFields through the main resource (rarely done).
        let mut entries =
            if t.status { None } else { client_managed_fields(&candidate, Some(old)) }.unwrap_or_else(|| parse_managed_fields(old));
        let writer = Writer {
            manager: &ctx.manager,
            api_version: &t.api_version(),
            subresource: if t.status { "status" } else { "" },
            now: &ctx.now,
        };
        record_update(&mut entries, &owned_view(old, scope), &owned_view(&candidate, scope), &writer);
        set_managed_fields(&mut candidate, entries);
        self.commit_update(t, old, candidate, ctx)
    }

    /// Stores a changed object: generation, no-op detection, validation, MODIFIED event.
    fn commit_update(&mut self, t: &Target, old: &Arc<Value>, mut new: Value, ctx: &WriteCtx) -> Written {
        if tracks_generation(&t.res.plural) {
            // Only spec-like changes count; metadata and status writes leave it alone.
            let generation = generation_of(old) + u64::from(spec_changed(old, &new));
            set_meta(&mut new, "generation", json!(generation));
        }
        if same_ignoring_times(old, &new) {
            // Like etcd's identical-write short cut: no new resourceVersion, no event, and
            // managedFields keep their old timestamps.
            return Ok((StatusCode::OK, old.clone()));
        }
        self.validate(&t.res, &new)?;
        if ctx.dry_run {
            return Ok((StatusCode::OK, Arc::new(new)));
        }
        let rv = self.bump();
        set_meta(&mut new, "resourceVersion", Value::String(rv.to_string()));
        let name = meta_str(&new, "name").unwrap_or_default().to_owned();
        Ok((StatusCode::OK, self.put(t.key(&name), new)))
    }

    /// Server-side apply.
    fn apply(&mut self, t: &Target, name: &str, config: Value, ctx: &WriteCtx, force: bool) -> Written {
        let mut config = config;
        // A null in an apply configuration means "not set" here.
        strip_nulls(&mut config);
        let Value::Object(mut map) = config else {
            return Err(ApiError::bad_request("the apply configuration must be an object"));
        };
        let api_version = t.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(given) if given == api_version => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({given}) does not match the expected API version ({api_version})"
                )));
            }
            None => {
                return Err(ApiError::bad_request("apiVersion must be set in an apply configuration"));
            }
        }
        let Some(kind) = map.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return Err(ApiError::bad_request("kind must be set in an apply configuration"));
        };
        self.check_kind(&t.res, &kind)?;
        check_identity(t, Some(name), &mut map)?;
        let mut config = Value::Object(map);
        if t.res.is_secret() {
            fold_string_data(&mut config);
        }
        let has_status = self.has_status(&t.res.plural);
        let scope = if t.status { Scope::Status } else { Scope::Main { has_status } };
        let subresource = if t.status { "status" } else { "" };
        let key = t.key(name);
        let existing = self.objects.get(&key).cloned();
        let live = match &existing {
            Some(obj) => (**obj).clone(),
            None if t.status => return Err(ApiError::not_found(&t.res, name)),
            None => {
                validate_name(&t.res, &kind, name)?;
                let mut meta = Map::new();
                meta.insert("name".into(), Value::String(name.to_owned()));
                if let Some(ns) = &t.namespace {
                    meta.insert("namespace".into(), Value::String(ns.clone()));
                }
                json!({"apiVersion": api_version, "kind": kind, "metadata": meta})
            }
        };

        let config_view = owned_view(&config, scope);
        let applied = field_set(&config_view);
        let mut entries = parse_managed_fields(&live);
        let is_mine = |e: &ManagedEntry| e.is(&ctx.manager, "Apply", subresource);
        let previous: FieldSet = entries.iter().find(|e| is_mine(e)).map(|e| e.fields.clone()).unwrap_or_default();
        let owned_by_others: FieldSet = entries.iter().filter(|e| !is_mine(e)).flat_map(|e| e.fields.iter().cloned()).collect();

        // Fields this manager applied before but no longer does go away, unless someone else
        // still wants them.
        let mut merged = live.clone();
        for path in previous.difference(&applied) {
            if !owned_by_others.contains(path) {
                remove_field(&mut merged, path, &owned_by_others);
            }
        }
        if let Value::Object(target) = &mut merged {
            merge_config(target, &config_view);
        }

        // Changing a value that another manager owns is a conflict unless forced; forcing
        // takes the field over.
        let (changed, removed) = diff_views(&owned_view(&live, scope), &owned_view(&merged, scope));
        let touched = |p: &FieldPath| changed.contains(p) || removed.contains(p);
        let conflicts: Vec<(String, FieldPath)> = entries
            .iter()
            .filter(|e| !is_mine(e))
            .flat_map(|e| e.fields.iter().filter(|p| touched(p)).map(|p| (e.conflict_label(), p.clone())))
            .collect();
        if !conflicts.is_empty() {
            if !force {
                return Err(ApiError::apply_conflicts(&conflicts));
            }
            for entry in entries.iter_mut().filter(|e| !is_mine(e)) {
                entry.fields.retain(|p| !touched(p));
            }
        }
        match entries.iter_mut().find(|e| is_mine(e)) {
            Some(entry) => {
                entry.fields = applied;
                entry.time = ctx.now.clone();
                entry.api_version = api_version;
            }
            None => entries.push(ManagedEntry {
                manager: ctx.manager.clone(),
                operation: "Apply".into(),
                api_version,
                time: ctx.now.clone(),
                subresource: subresource.into(),
                fields: applied,
            }),
        }
        set_managed_fields(&mut merged, entries);

        match existing {
            None => self.commit_new(t, key, merged, ctx),
            Some(old) => {
                restore_identity(&mut merged, &old);
                self.commit_update(t, &old, merged, ctx)
            }
        }
    }

    fn delete(&mut self, t: &Target, name: &str, options: &Value, query: &Query) -> Written {
        let key = t.key(name);
        let old = self.get_object(t, name)?;
        check_delete_preconditions(t, name, &old, options)?;
        let policy = options.get("propagationPolicy").and_then(Value::as_str).or(query.get("propagationPolicy"));
        let orphan = policy == Some("Orphan") || options.get("orphanDependents") == Some(&Value::Bool(true));
        let dry_run = query.get("dryRun") == Some("All")
            || options.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
        if !dry_run {
            self.delete_with_dependents(&key, !orphan);
        }
        let mut details = resource_details(&t.res, name);
        details["uid"] = json!(meta_str(&old, "uid").unwrap_or_default());
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        });
        Ok((StatusCode::OK, Arc::new(status)))
    }

    fn delete_collection(&mut self, t: &Target, query: &Query) -> Written {
        let filter = Filter::new(t, query)?;
        let keys: Vec<ObjKey> =
            self.scope(&t.res, t.namespace.as_deref(), None).filter(|(_, obj)| filter.matches(obj)).map(|(key, _)| key.clone()).collect();
        let mut items = Vec::new();
        if query.get("dryRun") != Some("All") {
            for key in keys {
                if let Some(gone) = self.delete_with_dependents(&key, true) {
                    items.push((*gone).clone());
                }
            }
        }
        let list = json!({
            "kind": format!("{}List", self.kind_for(&t.res.plural)),
            "apiVersion": t.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        });
        Ok((StatusCode::OK, Arc::new(list)))
    }

    /// Fills in a missing apiVersion/kind from the path; rejects ones that disagree with it.
    fn check_type_meta(&mut self, t: &Target, map: &mut Map<String, Value>) -> Result<(), ApiError> {
        let expected = t.api_version();
        match map.get("apiVersion") {
            None | Some(Value::Null) => {
                map.insert("apiVersion".into(), Value::String(expected));
            }
            Some(Value::String(given)) if *given == expected => {}
            Some(given) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({}) does not match the expected API version ({expected})",
                    plain(given)
                )));
            }
        }
        match map.get("kind") {
            None | Some(Value::Null) => {
                let kind = self.kind_for(&t.res.plural);
                map.insert("kind".into(), Value::String(kind));
                Ok(())
            }
            Some(Value::String(kind)) => {
                let kind = kind.clone();
                self.check_kind(&t.res, &kind)
            }
            Some(other) => Err(ApiError::bad_request(format!("invalid kind {}", plain(other)))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Object helpers
// ---------------------------------------------------------------------------------------------

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(group, _)| group).unwrap_or("")
}

fn tracks_generation(plural: &str) -> bool {
    !NO_GENERATION.contains(&plural)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The metadata map, created (or replaced, if it is not a map) when needed.
fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = obj.as_object_mut()?;
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(meta) = meta_mut(obj) {
        meta.insert(field.to_owned(), value);
    }
}

/// Sets or removes a top-level field.
fn set_top(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(value) => map.insert(field.to_owned(), value),
            None => map.remove(field),
        };
    }
}

fn generation_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1)
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A string value as itself, anything else as JSON, for messages.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn into_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::bad_request("the request body must be a JSON object")),
    }
}

/// Did anything outside metadata and status change? (That is what bumps generation.)
fn spec_changed(old: &Value, new: &Value) -> bool {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return old != new;
    };
    let outside = |k: &String| k != "metadata" && k != "status";
    let count = |m: &Map<String, Value>| m.keys().filter(|k| outside(k)).count();
    count(old) != count(new) || old.iter().any(|(k, v)| outside(k) && new.get(k) != Some(v))
}

/// Equal apart from managedFields timestamps?
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    fn without_times(obj: &Value) -> Value {
        let mut obj = obj.clone();
        if let Some(Value::Array(entries)) = obj.pointer_mut("/metadata/managedFields") {
            for entry in entries {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("time");
                }
            }
        }
        obj
    }
    without_times(a) == without_times(b)
}

/// Puts back the metadata only the server sets, from the stored object.
fn restore_identity(candidate: &mut Value, old: &Value) {
    for field in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"] {
        match old.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => set_meta(candidate, field, value.clone()),
            None => {
                if let Some(meta) = meta_mut(candidate) {
                    meta.remove(field);
                }
            }
        }
    }
}

/// Secrets: `stringData` is write-only; its entries land base64-encoded in `data`.
fn fold_string_data(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(string_data) = map.remove("stringData") else {
        return;
    };
    let Value::Object(string_data) = string_data else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            data.insert(key, Value::String(STANDARD.encode(plain(&value))));
        }
    }
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Checks the name of the object against the URL and fills in the namespace from it.
fn check_identity(t: &Target, url_name: Option<&str>, map: &mut Map<String, Value>) -> Result<(), ApiError> {
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if let Some(url_name) = url_name {
        let matches = match meta.get("name") {
            None | Some(Value::Null) => true,
            Some(Value::String(name)) => name.is_empty() || name == url_name,
            Some(_) => false,
        };
        if !matches {
            let given = meta.get("name").map(plain).unwrap_or_default();
            return Err(ApiError::bad_request(format!("the name of the object ({given}) does not match the name on the URL ({url_name})")));
        }
        meta.insert("name".into(), Value::String(url_name.to_owned()));
    }
    match &t.namespace {
        Some(ns) => {
            let matches = match meta.get("namespace") {
                None | Some(Value::Null) => true,
                Some(Value::String(given)) => given.is_empty() || given == ns,
                Some(_) => false,
            };
            if !matches {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        None => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// Optimistic concurrency: a resourceVersion in the request must be the current one.
fn check_precondition(t: &Target, name: &str, old: &Value, candidate: &Value) -> Result<(), ApiError> {
    let wanted = meta_str(candidate, "resourceVersion").unwrap_or_default();
    if !wanted.is_empty() && Some(wanted) != meta_str(old, "resourceVersion") {
        return Err(ApiError::conflict_modified(&t.res, name));
    }
    Ok(())
}

fn check_delete_preconditions(t: &Target, name: &str, old: &Value, options: &Value) -> Result<(), ApiError> {
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let wanted = options.pointer(&format!("/preconditions/{field}")).and_then(Value::as_str);
        let actual = meta_str(old, field).unwrap_or_default();
        if let Some(wanted) = wanted
            && wanted != actual
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {actual}",
                    t.res.qualified()
                ),
            )
            .with_details(resource_details(&t.res, name)));
        }
    }
    Ok(())
}

/// Object names must be DNS subdomains (RFC 1123), as for Secrets and custom resources.
fn validate_name(res: &Res, kind: &str, name: &str) -> Result<(), ApiError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Ok(());
    }
    Err(ApiError::invalid(
        &res.group,
        kind,
        name,
        &[FieldError {
            field: "metadata.name".into(),
            message: format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        }],
    ))
}

// ---------------------------------------------------------------------------------------------
// Field ownership (managedFields)
// ---------------------------------------------------------------------------------------------

/// A field path in FieldsV1 notation, one element per level: `["f:data", "f:token"]`.
type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// One `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    /// Empty for the main resource.
    subresource: String,
    fields: FieldSet,
}

impl ManagedEntry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn from_json(entry: &Value) -> Option<ManagedEntry> {
        let text = |field: &str| entry.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        entry.as_object()?;
        let mut fields = FieldSet::new();
        if let Some(v1) = entry.get("fieldsV1") {
            fields_from_v1(v1, &mut Vec::new(), &mut fields);
        }
        Some(ManagedEntry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: text("time"),
            subresource: text("subresource"),
            fields,
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_to_v1(&self.fields),
        });
        if !self.subresource.is_empty() {
            entry["subresource"] = Value::String(self.subresource.clone());
        }
        entry
    }

    /// How conflict messages name the manager: Update managers come with their apiVersion.
    fn conflict_label(&self) -> String {
        if self.operation == "Apply" { format!("\"{}\"", self.manager) } else { format!("\"{}\" using {}", self.manager, self.api_version) }
    }
}

/// Who performs an Update operation.
struct Writer<'a> {
    manager: &'a str,
    api_version: &'a str,
    subresource: &'a str,
    now: &'a str,
}

fn parse_managed_fields(obj: &Value) -> Vec<ManagedEntry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ManagedEntry::from_json).collect())
        .unwrap_or_default()
}

/// managedFields the client sent that differ from the stored ones, if any: the client meant to
/// replace them.
fn client_managed_fields(candidate: &Value, old: Option<&Value>) -> Option<Vec<ManagedEntry>> {
    let sent = candidate.pointer("/metadata/managedFields")?;
    let stored = old.and_then(|old| old.pointer("/metadata/managedFields"));
    match sent {
        Value::Array(entries) if !entries.is_empty() && Some(sent) != stored => Some(parse_managed_fields(candidate)),
        _ => None,
    }
}

/// Writes the entries back in the real server's order (operation, time, manager, …), dropping
/// managers that own nothing any more.
fn set_managed_fields(obj: &mut Value, mut entries: Vec<ManagedEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Some(meta) = meta_mut(obj) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        let entries = entries.iter().map(ManagedEntry::to_json).collect();
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// The part of an object that field managers can own, within `scope`. Main-scope views always
/// have a (possibly empty) `metadata` map so that diffs never see metadata itself appear.
fn owned_view(obj: &Value, scope: Scope) -> Map<String, Value> {
    let mut view = Map::new();
    let Some(fields) = obj.as_object() else {
        return view;
    };
    for (key, value) in fields {
        let keep = match (key.as_str(), scope) {
            ("apiVersion" | "kind" | "metadata", _) => false,
            ("status", Scope::Status) => true,
            ("status", Scope::Main { has_status }) => !has_status,
            (_, Scope::Status) => false,
            (_, Scope::Main { .. }) => true,
        };
        if keep {
            view.insert(key.clone(), value.clone());
        }
    }
    if let Scope::Main { .. } = scope {
        let meta: Map<String, Value> = obj
            .get("metadata")
            .and_then(Value::as_object)
            .map(|meta| meta.iter().filter(|(k, _)| OWNED_METADATA.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        view.insert("metadata".into(), Value::Object(meta));
    }
    view
}

fn field_key(key: &str) -> String {
    format!("f:{key}")
}

fn metadata_path() -> FieldPath {
    vec![field_key("metadata")]
}

/// The leaf fields of an apply configuration. Lists and scalars are leaves (lists are treated
/// atomically), and so are empty maps.
fn field_set(view: &Map<String, Value>) -> FieldSet {
    fn walk(map: &Map<String, Value>, prefix: &mut FieldPath, out: &mut FieldSet) {
        for (key, value) in map {
            prefix.push(field_key(key));
            match value {
                Value::Object(child) if !child.is_empty() => walk(child, prefix, out),
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(view, &mut Vec::new(), &mut out);
    out.remove(&metadata_path());
    out
}

/// Paths that differ between two views: (added or modified, removed). Maps present on both
/// sides are compared member by member; an added map counts itself and all its members.
fn diff_views(old: &Map<String, Value>, new: &Map<String, Value>) -> (FieldSet, FieldSet) {
    fn subtree(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        out.insert(prefix.clone());
        descendants(value, prefix, out);
    }
    fn descendants(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
        if let Value::Object(map) = value {
            for (key, child) in map {
                prefix.push(field_key(key));
                subtree(child, prefix, out);
                prefix.pop();
            }
        }
    }
    fn walk(old: &Map<String, Value>, new: &Map<String, Value>, prefix: &mut FieldPath, changed: &mut FieldSet, removed: &mut FieldSet) {
        for (key, new_value) in new {
            prefix.push(field_key(key));
            match (old.get(key), new_value) {
                (None, _) => subtree(new_value, prefix, changed),
                (Some(old_value), _) if old_value == new_value => {}
                (Some(Value::Object(old_map)), Value::Object(new_map)) => {
                    walk(old_map, new_map, prefix, changed, removed);
                }
                (Some(old_value), _) => {
                    changed.insert(prefix.clone());
                    descendants(new_value, prefix, changed);
                    descendants(old_value, prefix, removed);
                }
            }
            prefix.pop();
        }
        for (key, old_value) in old {
            if !new.contains_key(key) {
                prefix.push(field_key(key));
                subtree(old_value, prefix, removed);
                prefix.pop();
            }
        }
    }
    let mut changed = FieldSet::new();
    let mut removed = FieldSet::new();
    walk(old, new, &mut Vec::new(), &mut changed, &mut removed);
    changed.remove(&metadata_path());
    removed.remove(&metadata_path());
    (changed, removed)
}

/// Ownership after an Update operation: the writer takes every field it added or changed;
/// nobody keeps fields that were changed or removed under them.
fn record_update(entries: &mut Vec<ManagedEntry>, old_view: &Map<String, Value>, new_view: &Map<String, Value>, writer: &Writer<'_>) {
    let (changed, removed) = diff_views(old_view, new_view);
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if changed.is_empty() {
        return;
    }
    let position = entries.iter().position(|e| e.is(writer.manager, "Update", writer.subresource));
    let entry = match position {
        Some(index) => &mut entries[index],
        None => {
            entries.push(ManagedEntry {
                manager: writer.manager.to_owned(),
                operation: "Update".into(),
                api_version: String::new(),
                time: String::new(),
                subresource: writer.subresource.to_owned(),
                fields: FieldSet::new(),
            });
            let last = entries.len() - 1;
            &mut entries[last]
        }
    };
    entry.fields.extend(changed);
    entry.time = writer.now.to_owned();
    entry.api_version = writer.api_version.to_owned();
}

/// A `FieldsV1` document from a set of owned paths: `{}` marks an owned leaf, `"."` an owned
/// map that also has owned members.
fn fields_to_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut map = Map::new();
        if node.owned && !node.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (key, child) in &node.children {
            map.insert(key.clone(), render(child));
        }
        Value::Object(map)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.owned = true;
    }
    render(&root)
}

fn fields_from_v1(v1: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Some(map) = v1.as_object() else {
        return;
    };
    for (key, child) in map {
        if key == "." {
            continue;
        }
        prefix.push(key.clone());
        let owned = child.as_object().is_none_or(|c| c.is_empty() || c.contains_key("."));
        if owned {
            out.insert(prefix.clone());
        }
        fields_from_v1(child, prefix, out);
        prefix.pop();
    }
}

/// `.data.token`, as conflict messages print paths.
fn display_path(path: &[String]) -> String {
    path.iter()
        .map(|element| match element.strip_prefix("f:") {
            Some(name) => format!(".{name}"),
            None => element.clone(),
        })
        .collect()
}

/// Removes a field an apply no longer sets, and maps left empty by that unless someone owns
/// them (metadata itself always stays).
fn remove_field(obj: &mut Value, path: &[String], keep: &FieldSet) {
    fn walk(map: &mut Map<String, Value>, path: &[String], depth: usize, keep: &FieldSet) {
        // Only `f:` elements name map members; keyed list items are owned with their list.
        let Some(key) = path[depth].strip_prefix("f:") else {
            return;
        };
        if depth + 1 == path.len() {
            map.remove(key);
            return;
        }
        let Some(Value::Object(child)) = map.get_mut(key) else {
            return;
        };
        walk(child, path, depth + 1, keep);
        let emptied = child.is_empty();
        if emptied && !keep.contains(&path[..=depth]) && !(depth == 0 && key == "metadata") {
            map.remove(key);
        }
    }
    if let Value::Object(map) = obj
        && !path.is_empty()
    {
        walk(map, path, 0, keep);
    }
}

/// Merges an apply configuration into the live object: maps member by member, anything else
/// (scalars, lists) replaced.
fn merge_config(target: &mut Map<String, Value>, config: &Map<String, Value>) {
    for (key, value) in config {
        if let (Some(Value::Object(live)), Value::Object(wanted)) = (target.get_mut(key), value) {
            merge_config(live, wanted);
            continue;
        }
        target.insert(key.clone(), value.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// Patches
// ---------------------------------------------------------------------------------------------

enum PatchBody {
    Merge(Value),
    Json(Value),
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Strategic merge patches are applied as merge patches; their `$` directives are dropped.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).ok_or("a JSON patch operation needs an \"op\"")?;
        let path = op.get("path").and_then(Value::as_str).ok_or("a JSON patch operation needs a \"path\"")?;
        let path = pointer_tokens(path)?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("the {name} operation needs a \"value\""));
        let from = || -> Result<Vec<String>, String> {
            let from = op.get("from").and_then(Value::as_str).ok_or_else(|| format!("the {name} operation needs a \"from\""))?;
            pointer_tokens(from)
        };
        match name {
            "add" => add_at(doc, &path, value()?)?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                if path.is_empty() {
                    *doc = value()?;
                } else {
                    remove_at(doc, &path)?;
                    add_at(doc, &path, value()?)?;
                }
            }
            "move" => {
                let moved = remove_at(doc, &from()?)?;
                add_at(doc, &path, moved)?;
            }
            "copy" => {
                let copied = get_at(doc, &from()?)?.clone();
                add_at(doc, &path, copied)?;
            }
            "test" => {
                let expected = value()?;
                if *get_at(doc, &path)? != expected {
                    return Err(format!("testing value {} failed", op.get("path").and_then(Value::as_str).unwrap_or_default()));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn array_index(token: &str, len: usize) -> Result<usize, String> {
    match token.parse::<usize>() {
        Ok(index) if index < len => Ok(index),
        _ => Err(format!("array index {token:?} is out of range")),
    }
}

fn get_at<'a>(doc: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map.get(token).ok_or_else(|| format!("missing field {token:?}"))?,
            Value::Array(items) => &items[array_index(token, items.len())?],
            _ => return Err(format!("cannot descend into {token:?}")),
        };
    }
    Ok(current)
}

fn get_at_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map.get_mut(token).ok_or_else(|| format!("missing field {token:?}"))?,
            Value::Array(items) => {
                let index = array_index(token, items.len())?;
                &mut items[index]
            }
            _ => return Err(format!("cannot descend into {token:?}")),
        };
    }
    Ok(current)
}

fn add_at(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_at_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(index) if index <= items.len() => items.insert(index, value),
            _ => return Err(format!("array index {last:?} is out of range")),
        },
        _ => return Err(format!("cannot add {last:?} to a scalar")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path.split_last().ok_or("cannot remove the whole document")?;
    match get_at_mut(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| format!("missing field {last:?}")),
        Value::Array(items) => {
            let index = array_index(last, items.len())?;
            Ok(items.remove(index))
        }
        _ => Err(format!("cannot remove {last:?} from a scalar")),
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

/// What a list or watch selects: resource, namespace, label and field selectors.
#[derive(Clone, Debug)]
struct Filter {
    res: Res,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

#[derive(Clone, Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Debug)]
struct FieldRequirement {
    path: Vec<String>,
    equal: bool,
    value: String,
}

impl Filter {
    fn new(t: &Target, query: &Query) -> Result<Filter, ApiError> {
        let labels = parse_label_selector(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = parse_field_selector(query.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        Ok(Filter { res: t.res.clone(), namespace: t.namespace.clone(), labels, fields })
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::Absent(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|req| {
                let mut current = Some(obj);
                for part in &req.path {
                    current = current.and_then(|v| v.get(part));
                }
                let actual = match current {
                    None | Some(Value::Null) => String::new(),
                    Some(value) => plain(value),
                };
                (actual == req.value) == req.equal
            })
    }

    /// How a change looks to this watch, if it sees it at all: objects that start matching
    /// appear as ADDED, objects that stop matching as DELETED.
    fn classify(&self, change: &Change) -> Option<&'static str> {
        let (res, namespace, _) = &change.key;
        if *res != self.res || self.namespace.as_ref().is_some_and(|ns| ns != namespace) {
            return None;
        }
        let now = self.matches(&change.object);
        match change.op {
            Op::Added => now.then_some("ADDED"),
            Op::Deleted => now.then_some("DELETED"),
            Op::Modified => {
                let before = change.previous.as_deref().is_some_and(|previous| self.matches(previous));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Splits at commas that are not inside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_terms(selector).into_iter().map(|term| parse_label_term(term.trim())).collect()
}

fn label_token(token: &str, what: &str) -> Result<String, String> {
    let bad = |c: char| c.is_whitespace() || "=!(),".contains(c);
    if token.contains(bad) || (what == "key" && token.is_empty()) {
        Err(format!("invalid label {what} {token:?}"))
    } else {
        Ok(token.to_owned())
    }
}

fn parse_label_term(term: &str) -> Result<LabelRequirement, String> {
    if term.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::Absent(label_token(key.trim(), "key")?));
    }
    if let Some(open) = term.find('(') {
        let values = term[open + 1..].strip_suffix(')').ok_or_else(|| format!("missing ')' in {term:?}"))?;
        let values = values.split(',').map(|v| label_token(v.trim(), "value")).collect::<Result<Vec<_>, _>>()?;
        let mut head = term[..open].split_whitespace();
        let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
            return Err(format!("expected \"key in (values)\" in {term:?}"));
        };
        let key = label_token(key, "key")?;
        return match op {
            "in" => Ok(LabelRequirement::In(key, values)),
            "notin" => Ok(LabelRequirement::NotIn(key, values)),
            _ => Err(format!("unknown operator {op:?} in {term:?}")),
        };
    }
    let pair = |sep: &str| {
        term.split_once(sep).map(|(k, v)| -> Result<_, String> { Ok((label_token(k.trim(), "key")?, label_token(v.trim(), "value")?)) })
    };
    if let Some(pair) = pair("!=") {
        let (k, v) = pair?;
        return Ok(LabelRequirement::NotEquals(k, v));
    }
    if let Some(pair) = pair("==").or_else(|| pair("=")) {
        let (k, v) = pair?;
        return Ok(LabelRequirement::Equals(k, v));
    }
    Ok(LabelRequirement::Exists(label_token(term, "key")?))
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    selector
        .split(',')
        .map(|term| {
            let term = term.trim();
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {term:?}"));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("invalid field selector: {term:?}"));
            }
            Ok(FieldRequirement { path: key.split('.').map(str::to_owned).collect(), equal, value: value.trim().to_owned() })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lists and continue tokens
// ---------------------------------------------------------------------------------------------

struct ListPage {
    kind: String,
    api_version: String,
    rv: u64,
    items: Vec<Arc<Value>>,
    next: Option<String>,
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    metadata: Value,
    items: Vec<&'a Value>,
}

impl ListPage {
    fn into_response(self) -> Response {
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(next) = &self.next {
            metadata["continue"] = Value::String(next.clone());
        }
        let body = ListBody {
            kind: &self.kind,
            api_version: &self.api_version,
            metadata,
            items: self.items.iter().map(|item| item.as_ref()).collect(),
        };
        json_response(StatusCode::OK, &body)
    }
}

/// Continue tokens carry the list's resourceVersion (every page reports the first page's, so a
/// watch from it replays whatever changed meanwhile) and the last key returned.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!([rv, namespace, name]).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

/// What a watch still has to send.
enum Pending {
    Change(&'static str, Arc<Change>),
    /// An existing object, sent as ADDED (initial events).
    Object(Arc<Value>),
    Line(String),
}

impl Pending {
    fn render(self) -> String {
        match self {
            Pending::Change(kind, change) => event_line(kind, change.json()),
            Pending::Object(obj) => event_line("ADDED", &serde_json::to_string(&*obj).unwrap_or_default()),
            Pending::Line(line) => line,
        }
    }
}

fn event_line(kind: &str, object_json: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{object_json}}}\n")
}

fn bookmark_line(kind: &str, api_version: &str, rv: u64, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
    event_line("BOOKMARK", &object.to_string())
}

fn expired_line(requested: u64, oldest: u64) -> String {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    });
    event_line("ERROR", &status.to_string())
}

/// One open watch. Dropping it (client gone, end of stream) unsubscribes.
struct WatchStream {
    shared: Arc<Shared>,
    filter: Filter,
    kind: String,
    api_version: String,
    pending: VecDeque<Pending>,
    events: broadcast::Receiver<Arc<Change>>,
    control: watch::Receiver<Control>,
    /// The resourceVersion this watch has caught up to.
    last_rv: u64,
    bookmarks: bool,
    next_bookmark: Instant,
    deadline: Instant,
    /// End once `pending` is sent (410 Expired).
    closing: bool,
}

enum Step {
    Stop,
    Event(Arc<Change>),
    Bookmark,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item.render());
            }
            if self.closing {
                return None;
            }
            // Order matters: stop requests first, then queued events before a bookmark (which
            // may only claim a resourceVersion once every earlier event is sent).
            let step = tokio::select! {
                biased;
                _ = self.control.changed() => Step::Stop,
                () = tokio::time::sleep_until(self.deadline) => Step::Stop,
                received = self.events.recv() => match received {
                    Ok(change) => Step::Event(change),
                    // Lagged: this watcher fell too far behind; closing makes it re-watch.
                    Err(_) => Step::Stop,
                },
                () = tokio::time::sleep_until(self.next_bookmark), if self.bookmarks => Step::Bookmark,
            };
            match step {
                Step::Stop => return None,
                Step::Event(change) => {
                    if change.rv > self.last_rv {
                        self.last_rv = change.rv;
                        if let Some(kind) = self.filter.classify(&change) {
                            self.pending.push_back(Pending::Change(kind, change));
                        }
                    }
                }
                Step::Bookmark => self.bookmark(),
            }
        }
    }

    fn bookmark(&mut self) {
        let store = lock(&self.shared.store);
        // Changes are broadcast under the store lock, so an empty queue now means every change
        // up to `store.rv` has reached this watch.
        if !self.events.is_empty() {
            return;
        }
        self.last_rv = self.last_rv.max(store.rv);
        self.next_bookmark = Instant::now() + store.bookmark_interval;
        drop(store);
        let line = bookmark_line(&self.kind, &self.api_version, self.last_rv, false);
        self.pending.push_back(Pending::Line(line));
    }
}

fn open_watch(shared: &Arc<Shared>, t: &Target, query: &Query) -> Result<Response, ApiError> {
    let filter = Filter::new(t, query)?;
    let from = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?),
    };
    let send_initial = query.flag("sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let control = shared.control.subscribe();
    if control.borrow().shutdown {
        return Err(ApiError::new(503, "ServiceUnavailable", "the server is shutting down"));
    }

    let store = lock(&shared.store);
    // Subscribing and reading the history under one lock: nothing is missed or sent twice.
    let events = store.events.subscribe();
    let mut pending = VecDeque::new();
    let mut closing = false;
    let kind = store.kind_for(&t.res.plural);
    let api_version = t.api_version();
    match from {
        Some(rv) if !send_initial => {
            if rv < store.oldest_rv {
                pending.push_back(Pending::Line(expired_line(rv, store.oldest_rv)));
                closing = true;
            } else {
                let start = store.history.partition_point(|c| c.rv <= rv);
                for change in store.history.range(start..) {
                    if let Some(kind) = filter.classify(change) {
                        pending.push_back(Pending::Change(kind, change.clone()));
                    }
                }
            }
        }
        _ => {
            // No resourceVersion (or "0", or a streaming list): the current state first.
            for (_, obj) in store.scope(&t.res, t.namespace.as_deref(), None) {
                if filter.matches(obj) {
                    pending.push_back(Pending::Object(obj.clone()));
                }
            }
            if send_initial {
                let line = bookmark_line(&kind, &api_version, store.rv, true);
                pending.push_back(Pending::Line(line));
            }
        }
    }
    let last_rv = store.rv;
    let now = Instant::now();
    let next_bookmark = now + store.bookmark_interval;
    drop(store);

    shared.watches.fetch_add(1, Ordering::SeqCst);
    let stream = WatchStream {
        shared: shared.clone(),
        filter,
        kind,
        api_version,
        pending,
        events,
        control,
        last_rv,
        bookmarks: query.flag("allowWatchBookmarks"),
        next_bookmark,
        deadline: now + timeout,
        closing,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let line = stream.next_line().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), stream))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A request path that names a resource.
#[derive(Clone, Debug)]
struct Target {
    res: Res,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl Target {
    fn api_version(&self) -> String {
        if self.res.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.res.group, self.version) }
    }

    fn key(&self, name: &str) -> ObjKey {
        (self.res.clone(), self.namespace.clone().unwrap_or_default(), name.to_owned())
    }

    /// The resource as request counts and faults name it.
    fn counted_resource(&self) -> String {
        if self.status { format!("{}/status", self.res.plural) } else { self.res.plural.clone() }
    }
}

enum Route {
    Object(Target),
    Version,
    Health,
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let target = match segments.as_slice() {
            ["version"] => return Route::Version,
            ["healthz" | "livez" | "readyz"] => return Route::Health,
            ["api", version, rest @ ..] => Self::target("", version, rest),
            ["apis", group, version, rest @ ..] => Self::target(group, version, rest),
            _ => None,
        };
        target.map_or(Route::Unknown, Route::Object)
    }

    fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
        // `namespaces/{ns}/{plural}…` is namespaced, except `namespaces/{name}/status` and
        // `…/finalize`, which are subresources of a Namespace.
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, ..] if !matches!(*plural, "status" | "finalize") => (Some((*ns).to_owned()), &rest[2..]),
            _ => (None, rest),
        };
        let (plural, name, status) = match rest {
            [plural] => (*plural, None, false),
            [plural, name] => (*plural, Some(*name), false),
            [plural, name, "status"] => (*plural, Some(*name), true),
            _ => return None,
        };
        Some(Target { res: Res::new(group, plural), version: version.to_owned(), namespace, name: name.map(str::to_owned), status })
    }
}

/// Decoded query parameters.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn verb_of(method: &Method, route: &Route, query: &Query) -> &'static str {
    let (is_object, named) = match route {
        Route::Object(t) => (true, t.name.is_some()),
        _ => (false, false),
    };
    match *method {
        Method::GET if is_object && !named && query.flag("watch") => "watch",
        Method::GET if is_object && !named => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if is_object && !named => "deletecollection",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

/// The field manager of an Update operation: `fieldManager`, else the User-Agent's product.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|ua| ua.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|product| !product.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Apply configurations may be YAML or JSON.
fn parse_apply_config(body: &[u8]) -> Result<Value, ApiError> {
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{');
    if looks_like_json && let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query());
    let route = Route::parse(parts.uri.path());
    let verb = verb_of(&parts.method, &route, &query);
    let resource = match &route {
        Route::Object(t) => t.counted_resource(),
        Route::Version => "version".to_owned(),
        Route::Health => "healthz".to_owned(),
        Route::Unknown => String::new(),
    };
    shared.count(verb, &resource);
    match shared.take_fault(verb, &resource) {
        Some(FaultKind::Status(code)) => {
            let target = match &route {
                Route::Object(t) => Some(t),
                _ => None,
            };
            return ApiError::injected(code, target).into_response();
        }
        Some(FaultKind::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }

    let t = match route {
        Route::Object(t) => t,
        Route::Version if parts.method == Method::GET => {
            let version = json!({
                "major": "1",
                "minor": "33",
                "gitVersion": "v1.33.0",
                "platform": "linux/amd64",
            });
            return json_response(StatusCode::OK, &version);
        }
        Route::Health if parts.method == Method::GET => return "ok".into_response(),
        Route::Version | Route::Health => return ApiError::method_not_allowed().into_response(),
        Route::Unknown => return ApiError::path_not_found().into_response(),
    };
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response();
        }
    };
    if t.status {
        let exists = shared.with_store(|store| store.has_status(&t.res.plural));
        if !exists {
            return ApiError::path_not_found().into_response();
        }
        if !matches!(verb, "get" | "update" | "patch") {
            return ApiError::method_not_allowed().into_response();
        }
    }
    let ctx = WriteCtx { manager: field_manager(&query, &parts.headers), dry_run: query.get("dryRun") == Some("All"), now: now_rfc3339() };
    let written = match (verb, t.name.as_deref()) {
        ("get", Some(name)) => shared.with_store(|store| store.get_object(&t, name)).map(|obj| (StatusCode::OK, obj)),
        ("list", None) => {
            return match shared.with_store(|store| store.list_page(&t, &query)) {
                Ok(page) => page.into_response(),
                Err(e) => e.into_response(),
            };
        }
        ("watch", None) => {
            return open_watch(&shared, &t, &query).unwrap_or_else(IntoResponse::into_response);
        }
        ("create", None) => parse_json(&body).and_then(|obj| shared.with_store(|store| store.create(&t, obj, &ctx))),
        ("update", Some(name)) => parse_json(&body).and_then(|obj| shared.with_store(|store| store.replace(&t, name, obj, &ctx))),
        ("patch", Some(name)) => patch_request(&shared, &t, name, &parts.headers, &query, &body, ctx),
        ("delete", Some(name)) => {
            let options = if body.iter().all(u8::is_ascii_whitespace) { Ok(Value::Null) } else { parse_json(&body) };
            options.and_then(|options| shared.with_store(|store| store.delete(&t, name, &options, &query)))
        }
        ("deletecollection", None) => shared.with_store(|store| store.delete_collection(&t, &query)),
        _ => Err(ApiError::method_not_allowed()),
    };
    match written {
        Ok((code, obj)) => json_response(code, &*obj),
        Err(e) => e.into_response(),
    }
}

fn patch_request(shared: &Shared, t: &Target, name: &str, headers: &HeaderMap, query: &Query, body: &[u8], ctx: WriteCtx) -> Written {
    let media = media_type(headers);
    if media == "application/apply-patch+yaml" {
        // Unlike other writes, apply has no User-Agent fallback: the manager must be named.
        let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                &[FieldError { field: "fieldManager".into(), message: "Required value: is required for apply patch".into() }],
            ));
        };
        let ctx = WriteCtx { manager: manager.to_owned(), ..ctx };
        let force = query.flag("force");
        let config = parse_apply_config(body)?;
        return shared.with_store(|store| store.apply(t, name, config, &ctx, force));
    }
    if query.get("force").is_some() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            &[FieldError { field: "force".into(), message: "Forbidden: may not be specified for non-apply patch".into() }],
        ));
    }
    let patch = match media.as_str() {
        "application/merge-patch+json" => PatchBody::Merge(parse_json(body)?),
        "application/strategic-merge-patch+json" => {
            let mut patch = parse_json(body)?;
            strip_directives(&mut patch);
            PatchBody::Merge(patch)
        }
        "application/json-patch+json" => PatchBody::Json(parse_json(body)?),
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {media:?})"
                ),
            ));
        }
    };
    if let PatchBody::Merge(patch) = &patch
        && !patch.is_object()
    {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    shared.with_store(|store| store.patch(t, name, &patch, &ctx))
}

fn json_response<T: Serialize + ?Sized>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors (Status bodies)
// ---------------------------------------------------------------------------------------------

/// A failure answered with a `Status` body, as the real server does.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    fn not_found(res: &Res, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", res.qualified())).with_details(resource_details(res, name))
    }

    fn already_exists(res: &Res, name: &str) -> ApiError {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", res.qualified()))
            .with_details(resource_details(res, name))
    }

    fn conflict_modified(res: &Res, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(resource_details(res, name))
    }

    fn path_not_found() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    fn method_not_allowed() -> ApiError {
        ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource").with_details(json!({}))
    }

    /// 422 Invalid, worded like the real server's validation errors.
    fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
        let qualified_kind = if group.is_empty() { kind.to_owned() } else { format!("{kind}.{group}") };
        let problems: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        let problems = match problems.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let reason = if e.message.starts_with("Required value") {
                    "FieldValueRequired"
                } else if e.message.starts_with("Forbidden") {
                    "FieldValueForbidden"
                } else {
                    "FieldValueInvalid"
                };
                json!({"reason": reason, "message": e.message, "field": e.field})
            })
            .collect();
        let mut details = json!({"kind": kind, "causes": causes});
        if !name.is_empty() {
            details["name"] = Value::String(name.to_owned());
        }
        if !group.is_empty() {
            details["group"] = Value::String(group.to_owned());
        }
        ApiError::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {problems}")).with_details(details)
    }

    /// Server-side apply conflicts, worded like structured-merge-diff's.
    fn apply_conflicts(conflicts: &[(String, FieldPath)]) -> ApiError {
        let message = match conflicts {
            [(manager, path)] => format!("Apply failed with 1 conflict: conflict with {manager}: {}", display_path(path)),
            many => {
                let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                for (manager, path) in many {
                    by_manager.entry(manager.as_str()).or_default().push(display_path(path));
                }
                let mut lines = Vec::new();
                for (manager, paths) in by_manager {
                    lines.push(format!("conflicts with {manager}:"));
                    lines.extend(paths.into_iter().map(|p| format!("- {p}")));
                }
                format!("Apply failed with {} conflicts: {}", many.len(), lines.join("\n"))
            }
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, path)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": display_path(path),
                })
            })
            .collect();
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// The answer to a request hit by an injected `FaultKind::Status`.
    fn injected(code: u16, target: Option<&Target>) -> ApiError {
        let (reason, message) = match code {
            400 => ("BadRequest", "the request is invalid (injected fault)"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden (injected fault)"),
            404 => ("NotFound", "the server could not find the requested resource"),
            405 => ("MethodNotAllowed", "the server does not allow this method"),
            409 => (
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            ),
            410 => ("Expired", "the resource version is too old (injected fault)"),
            422 => ("Invalid", "the object is invalid (injected fault)"),
            429 => ("TooManyRequests", "Too many requests, please try again later."),
            500 => ("InternalError", "an error on the server (injected fault) has prevented the request from succeeding"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted (injected fault)"),
            _ => ("InternalError", "injected fault"),
        };
        let mut details = match target {
            Some(t) => {
                let mut details = resource_details(&t.res, t.name.as_deref().unwrap_or_default());
                if t.name.is_none()
                    && let Some(map) = details.as_object_mut()
                {
                    map.remove("name");
                }
                details
            }
            None => json!({}),
        };
        if code == 429 {
            details["retryAfterSeconds"] = json!(1);
        }
        ApiError::new(code, reason, message).with_details(details)
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            body["details"] = details.clone();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(code, &self.body());
        if self.code == 429 {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `details` of a Status about one object: name, group (if any) and the plural as "kind".
fn resource_details(res: &Res, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        details["group"] = Value::String(res.group.clone());
    }
    details
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Now as RFC 3339 in UTC with whole seconds, the format of Kubernetes timestamps.
fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// Gregorian date of a day count since 1970-01-01 (proleptic calendar, 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_376_020), "2026-11-22T19:33:40Z");
    }

    #[test]
    fn fields_v1_round_trip() {
        let v1 = json!({
            "f:data": {".": {}, "f:a": {}, "f:b": {}},
            "f:metadata": {"f:labels": {"f:x": {}}},
            "f:type": {}
        });
        let mut set = FieldSet::new();
        fields_from_v1(&v1, &mut Vec::new(), &mut set);
        assert!(set.contains(&vec!["f:data".to_owned()]));
        assert!(!set.contains(&vec!["f:metadata".to_owned()]));
        assert_eq!(fields_to_v1(&set), v1);
    }

    #[test]
    fn label_selector_parsing() {
        assert!(parse_label_selector("a in (x,y),!b,c!=d,e==f,g=h,i notin (j),k").is_ok());
        assert!(parse_label_selector("a in (x").is_err());
        assert!(parse_label_selector("a b").is_err());
        assert!(parse_label_selector("a=b,,c").is_err());
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"a": [1, 2], "b": {"c": 1}});
        let ops = json!([
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "add", "path": "/a/0", "value": 0},
            {"op": "replace", "path": "/b/c", "value": 2},
            {"op": "move", "from": "/b/c", "path": "/d"},
            {"op": "copy", "from": "/d", "path": "/e~1f"},
            {"op": "remove", "path": "/a/1"},
            {"op": "test", "path": "/d", "value": 2}
        ]);
        json_patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"a": [0, 2, 3], "b": {}, "d": 2, "e/f": 2}));
        let failing = json!([{"op": "test", "path": "/d", "value": 3}]);
        assert!(json_patch(&mut doc, &failing).is_err());
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }
}
