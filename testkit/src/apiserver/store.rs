//! The object store: objects by key, the global resourceVersion, the change history that
//! watches replay, uids and generated names, and the garbage collector's cascade.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Validator;
use super::kinds::BUILTIN_KINDS;
use super::objects::{
    fold_string_data, generation_of, group_of, meta_mut, meta_str, owner_uids, set_meta, spec_changed, tracks_generation,
};
use super::time::now_rfc3339;
use super::validation::MAX_GENERATE_NAME_PREFIX;

/// How many past changes are kept for watch replay; watches from older versions get 410.
const HISTORY_LIMIT: usize = 20_000;
/// Per-watcher backlog before a slow watcher is disconnected (it then re-watches).
const BROADCAST_CAPACITY: usize = 20_000;
/// Bookmark period for watches that allow bookmarks, until changed.
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Alphabet of generated name suffixes (the real server's: no vowels, no confusable digits).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A resource: API group (empty for the core group) and plural.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Res {
    pub(super) group: String,
    pub(super) plural: String,
}

impl Res {
    pub(super) fn new(group: &str, plural: &str) -> Res {
        Res { group: group.to_owned(), plural: plural.to_owned() }
    }

    /// `secrets`, `navigatortokens.navigator.dev`: how the real server names resources in
    /// messages.
    pub(super) fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    pub(super) fn is_secret(&self) -> bool {
        self.group.is_empty() && self.plural == "secrets"
    }
}

/// Store key: resource, namespace (empty for cluster-scoped objects), name. The ordering makes
/// every resource, and every namespace within it, a contiguous range.
pub(super) type ObjKey = (Res, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Added,
    Modified,
    Deleted,
}

/// One committed change, kept for watch replay and broadcast to live watches.
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) key: ObjKey,
    pub(super) op: Op,
    pub(super) object: Arc<Value>,
    /// The object before a modification or deletion: label-selector watches need it to turn a
    /// MODIFIED into ADDED/DELETED when the object starts/stops matching.
    pub(super) previous: Option<Arc<Value>>,
    /// The object serialised once, shared by all watchers.
    pub(super) json: OnceLock<String>,
    /// When it was committed (lagging watches deliver it later).
    pub(super) at: Instant,
}

impl Change {
    pub(super) fn json(&self) -> &str {
        self.json.get_or_init(|| serde_json::to_string(&*self.object).unwrap_or_default())
    }
}

pub(super) struct Store {
    /// Global resourceVersion: that of the last change.
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<ObjKey, Arc<Value>>,
    by_uid: HashMap<String, ObjKey>,
    /// Owner uid → objects that list it in `ownerReferences`.
    dependents: HashMap<String, BTreeSet<ObjKey>>,
    pub(super) history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this have missed forgotten changes (410).
    pub(super) oldest_rv: u64,
    pub(super) events: broadcast::Sender<Arc<Change>>,
    pub(super) kinds: HashMap<String, String>,
    pub(super) plurals: HashMap<String, String>,
    pub(super) status_subresources: HashSet<String>,
    /// Resources without namespaces (built in, or a CRD with `scope: Cluster`).
    pub(super) cluster_scoped: HashSet<String>,
    pub(super) validators: HashMap<String, Arc<Validator>>,
    pub(super) bookmark_interval: Duration,
    rng: u64,
}

/// Built-in resources that have no namespace.
const CLUSTER_SCOPED: [&str; 3] = ["namespaces", "customresourcedefinitions", "clusternavigatortokens"];

impl Store {
    pub(super) fn new() -> Store {
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
            cluster_scoped: CLUSTER_SCOPED.iter().map(|p| (*p).to_owned()).collect(),
            validators: HashMap::new(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            rng: seed,
        };
        for (plural, kind) in BUILTIN_KINDS {
            store.register_kind(plural, kind);
        }
        store
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
    pub(super) fn generate_name(&mut self, res: &Res, namespace: &str, prefix: &str) -> Option<String> {
        // Long prefixes are cut so that the name stays within 63 characters.
        let prefix = prefix.get(..MAX_GENERATE_NAME_PREFIX).unwrap_or(prefix);
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

    pub(super) fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores an object that already carries its new resourceVersion (`self.rv`) and
    /// publishes the change.
    pub(super) fn put(&mut self, key: ObjKey, object: Value) -> Arc<Value> {
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
        let change = Arc::new(Change { rv: self.rv, key, op, object, previous, json: OnceLock::new(), at: Instant::now() });
        if self.history.len() >= HISTORY_LIMIT
            && let Some(forgotten) = self.history.pop_front()
        {
            self.oldest_rv = forgotten.rv;
        }
        self.history.push_back(change.clone());
        // An error only means that nobody is watching.
        let _ = self.events.send(change);
    }

    pub(super) fn index(&mut self, key: &ObjKey, obj: &Value) {
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
    pub(super) fn delete_with_dependents(&mut self, key: &ObjKey, cascade: bool) -> Option<Arc<Value>> {
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
    pub(super) fn scope<'a>(
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
    /// Server-set metadata of a new object.
    pub(super) fn stamp_new(&mut self, res: &Res, obj: &mut Value, now: &str) {
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

    pub(super) fn insert_direct(&mut self, obj: Value) -> Result<Arc<Value>, String> {
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
}
