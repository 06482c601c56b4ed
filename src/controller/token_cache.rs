//! The cache of NavigatorTokens, each kept in the smallest form a reconcile can be served from.
//!
//! A kube `Store` keeps every NavigatorToken decoded: 752 bytes of structs (360 of them an
//! `ObjectMeta` of mostly empty fields) plus a dozen strings, and a key with four more: 1.5 KiB
//! per NavigatorToken, half the operator's memory (bench/RESULTS.md). Here a NavigatorToken is
//! its key, the few fields read without a reconcile (resourceVersion, the credentials Secret's
//! name, the status series of /metrics) and the rest of the object as compressed JSON text,
//! decoded again when a reconcile starts (a few microseconds, against the API requests a
//! reconcile makes).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use futures::{Stream, StreamExt};
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;
use tracing::error;

use super::queue::Key;
use crate::crd::{NavigatorToken, NavigatorTokenSpec, NavigatorTokenStatus};
use crate::metrics::{CachedSeries, StatusSeries};

/// One cached NavigatorToken.
#[derive(Debug)]
pub(super) struct CachedToken {
    key: Key,
    resource_version: Box<str>,
    credentials_name: Box<str>,
    series: StatusSeries,
    /// The object without its name, namespace and resourceVersion: JSON, LZ4-compressed against
    /// [`DICTIONARY`].
    rest: Box<[u8]>,
}

/// What `rest` holds.
#[derive(serde::Serialize)]
struct Rest<'a> {
    metadata: &'a ObjectMeta,
    spec: &'a NavigatorTokenSpec,
    status: &'a Option<NavigatorTokenStatus>,
}

/// The JSON text of `rest`.
fn rest_json(token: &NavigatorToken) -> Vec<u8> {
    let metadata = ObjectMeta { name: None, namespace: None, resource_version: None, ..token.metadata.clone() };
    // Serializing these types cannot fail (string keys, no serializer that fails).
    serde_json::to_vec(&Rest { metadata: &metadata, spec: &token.spec, status: &token.status }).unwrap_or_default()
}

/// A NavigatorToken as this operator caches them, as text: LZ4 finds the keys and the usual
/// values here instead of in each token's own text, which takes a third of the room it would
/// alone (bench/RESULTS.md).
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let time = "2026-01-01T00:00:00Z";
    let ready = |status: &str, reason: &str, message: &str| json!({"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": time, "observedGeneration": 1});
    let sample = json!({
        "metadata": {
            "uid": "00000000-0000-0000-0000-000000000000", "creationTimestamp": time, "generation": 1,
            "annotations": {"navigator.dev/refresh-requested-at": time},
            "labels": {"app.kubernetes.io/name": "navigator-token"},
        },
        "spec": {
            "orgId": "00000000-0000-0000-0000-000000000000", "credentialsSecretRef": {"name": "navigator-credentials"},
            "endpoint": {"type": "CSP", "url": "https://console.cloud.vmware.com/csp/gateway/am/api/auth/token"},
            "validity": "1h", "refreshBefore": "10m", "target": {"secretName": "navigator-token"},
        },
        "status": {
            "conditions": [ready("True", "TokenValid", &format!("Secret navigator-token holds a token valid until {time}"))],
            "observedGeneration": 1, "secretName": "navigator-token", "issuedAt": time, "expiresAt": time, "grantedLifetime": "1h",
            "nextRefreshAt": time, "consecutiveFailures": 1,
            "lastFailure": {"time": time, "reason": "RefreshFailing", "message": "the token endpoint answered"},
            "inputsFingerprint": "0000000000000000000000000000000000000000000000000000000000000000",
        },
    });
    serde_json::from_value(sample).map(|token: NavigatorToken| rest_json(&token)).unwrap_or_default()
});

impl CachedToken {
    fn new(key: Key, token: &NavigatorToken) -> Self {
        CachedToken {
            key,
            resource_version: token.metadata.resource_version.as_deref().unwrap_or_default().into(),
            credentials_name: token.spec.credentials_secret_ref.name.as_str().into(),
            series: StatusSeries::of(token.status.as_ref()),
            rest: lz4_flex::block::compress_prepend_size_with_dict(&rest_json(token), &DICTIONARY).into_boxed_slice(),
        }
    }

    /// The NavigatorToken again, as it was listed or watched.
    fn token(&self) -> Option<NavigatorToken> {
        let decoded = lz4_flex::block::decompress_size_prepended_with_dict(&self.rest, &DICTIONARY)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_slice::<NavigatorToken>(&json).map_err(|e| e.to_string()));
        let mut token = decoded
            .inspect_err(|e| error!(namespace = &*self.key.namespace, navigatortoken = &*self.key.name, %e, "a cached NavigatorToken does not decode"))
            .ok()?;
        token.metadata.name = Some(self.key.name.to_string());
        token.metadata.namespace = Some(self.key.namespace.to_string());
        token.metadata.resource_version = Some(self.resource_version.to_string()).filter(|rv| !rv.is_empty());
        Some(token)
    }
}

impl CachedSeries for CachedToken {
    fn namespace(&self) -> &str {
        &self.key.namespace
    }
    fn name(&self) -> &str {
        &self.key.name
    }
    fn series(&self) -> std::borrow::Cow<'_, StatusSeries> {
        std::borrow::Cow::Borrowed(&self.series)
    }
}

/// The key of `token`.
fn key_of(token: &NavigatorToken) -> Option<Key> {
    Some(super::queue::key(token.metadata.name.as_deref()?, token.metadata.namespace.as_deref()?))
}

/// `key`, or the equal key `cached` already holds: one copy of each key, shared by the cache and
/// the queue, however often the token changes.
fn cached_key(cached: &HashMap<Key, Arc<CachedToken>>, key: Key) -> Key {
    cached.get_key_value(&key).map_or(key, |(held, _)| held.clone())
}

/// The NavigatorTokens of the watch, by key.
#[derive(Clone, Default)]
pub(super) struct TokenCache(Arc<RwLock<HashMap<Key, Arc<CachedToken>>>>);

impl TokenCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Arc<CachedToken>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The NavigatorToken `key`, decoded for a reconcile, and the cache's copy of its key.
    pub(super) fn token(&self, key: &Key) -> Option<(Key, Arc<NavigatorToken>)> {
        let cached = self.read().get(key).cloned()?;
        Some((cached.key.clone(), Arc::new(cached.token()?)))
    }

    /// Whether NavigatorToken `name` in `namespace` is cached.
    pub(super) fn contains(&self, namespace: &str, name: &str) -> bool {
        self.read().contains_key(&super::queue::key(name, namespace))
    }

    /// The cached resourceVersion of NavigatorToken `key`.
    pub(super) fn resource_version(&self, key: &Key) -> Option<String> {
        self.read().get(key).map(|t| t.resource_version.to_string())
    }

    /// The NavigatorTokens in `namespace` whose credentials are in Secret `name`.
    pub(super) fn users_of_credentials(&self, namespace: &str, name: &str) -> Vec<Key> {
        let cache = self.read();
        cache.values().filter(|t| &*t.key.namespace == namespace && &*t.credentials_name == name).map(|t| t.key.clone()).collect()
    }

    /// Every cached NavigatorToken, for the series of /metrics.
    pub(super) fn series(&self) -> Vec<Arc<dyn CachedSeries>> {
        self.read().values().map(|t| t.clone() as Arc<dyn CachedSeries>).collect()
    }

    /// The NavigatorTokens to reconcile for the events of the watch, taken after the cache's
    /// [`writer`](Self::writer) has seen them, as the cache's own keys: a token as it changes,
    /// and every token once a (re)list is complete (the cache takes a list in whole, at its
    /// end). Watch errors are dropped: the watch retries.
    pub(super) fn changes(
        &self,
        events: impl Stream<Item = Result<watcher::Event<NavigatorToken>, watcher::Error>>,
    ) -> impl Stream<Item = Key> {
        let cache = self.clone();
        events.flat_map(move |event| {
            let cached = cache.read();
            let due: Vec<Key> = match event {
                Ok(watcher::Event::Apply(t)) => {
                    key_of(&t).and_then(|key| Some(cached.get_key_value(&key)?.0.clone())).into_iter().collect()
                }
                Ok(watcher::Event::InitDone) => cached.keys().cloned().collect(),
                Ok(watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::Delete(_)) | Err(_) => Vec::new(),
            };
            futures::stream::iter(due)
        })
    }

    /// A handler of the watch's events that keeps the cache as kube's reflector keeps a `Store` (a
    /// (re)list is collected aside and replaces the whole cache once complete), and reports each
    /// NavigatorToken that leaves the cache to `on_removed`, after it left: a deleted one, or one
    /// missing from a relist (deleted while the watch was down, when no Delete event comes).
    pub(super) fn writer(
        &self,
        on_removed: impl Fn(ObjectRef<NavigatorToken>),
    ) -> impl FnMut(&Result<watcher::Event<NavigatorToken>, watcher::Error>) {
        let cache = self.0.clone();
        let mut relist = HashMap::new();
        let removed = move |key: &Key| on_removed(ObjectRef::new(&key.name).within(&key.namespace));
        move |event| {
            let write = || cache.write().unwrap_or_else(|p| p.into_inner());
            let Ok(event) = event else { return };
            match event {
                watcher::Event::Init => relist = HashMap::new(),
                watcher::Event::InitApply(t) => {
                    if let Some(key) = key_of(t) {
                        let key = cached_key(&cache.read().unwrap_or_else(|p| p.into_inner()), key);
                        relist.insert(key.clone(), Arc::new(CachedToken::new(key, t)));
                    }
                }
                watcher::Event::InitDone => {
                    let before = std::mem::replace(&mut *write(), std::mem::take(&mut relist));
                    let now = cache.read().unwrap_or_else(|p| p.into_inner());
                    before.keys().filter(|key| !now.contains_key(*key)).for_each(&removed);
                }
                watcher::Event::Apply(t) => {
                    if let Some(key) = key_of(t) {
                        let mut cached = write();
                        let key = cached_key(&cached, key);
                        cached.insert(key.clone(), Arc::new(CachedToken::new(key, t)));
                    }
                }
                watcher::Event::Delete(t) => {
                    if let Some(key) = key_of(t) {
                        let gone = write().remove(&key).is_some();
                        if gone {
                            removed(&key);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};

    use super::*;
    use crate::controller::queue::key;

    fn token(name: &str, credentials: &str) -> NavigatorToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {
                "name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2026-11-29T09:00:00Z", "deletionTimestamp": "2026-11-29T11:00:00Z", "finalizers": ["x"],
                "labels": {"app": "a"}, "annotations": {"navigator.dev/refresh-requested-at": "now"},
            },
            "spec": {
                "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": credentials, "apiTokenKey": "api"},
                "endpoint": {"type": "CSP", "url": "https://console.cloud.vmware.com"}, "validity": "1h", "suspend": true,
                "target": {"secretName": "t", "template": {"data": {"k": "{{ .accessToken }}"}}},
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "TokenValid", "message": "m", "lastTransitionTime": "2026-11-29T10:00:00Z", "observedGeneration": 3}],
                "issuedAt": "2026-11-29T10:00:00Z", "expiresAt": "2026-11-29T11:00:00Z", "nextRefreshAt": "2026-11-29T10:50:00Z",
                "consecutiveFailures": 2, "lastFailure": {"time": "2026-11-29T09:59:00Z", "reason": "Timeout", "message": "slow"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_reconcile_gets_back_exactly_the_object_the_watch_gave() {
        let cache = TokenCache::default();
        let mut writer = cache.writer(|_| {});
        let original = token("a", "creds");
        for event in [Init, InitApply(original.clone()), InitDone] {
            writer(&Ok(event));
        }
        let key = key("a", "team-a");
        let (cached_key, decoded) = cache.token(&key).expect("cached");
        assert_eq!(serde_json::to_value(&*decoded).unwrap(), serde_json::to_value(&original).unwrap());
        assert_eq!(cached_key, key);
        assert_eq!(cache.resource_version(&key).as_deref(), Some("42"));
        assert_eq!(cache.users_of_credentials("team-a", "creds"), std::slice::from_ref(&key));
        assert!(cache.users_of_credentials("team-b", "creds").is_empty() && cache.users_of_credentials("team-a", "other").is_empty());
    }

    #[test]
    fn a_cached_token_takes_a_fraction_of_its_text() {
        let token = token("bench-00042", "bench-credentials");
        let cached = CachedToken::new(key("bench-00042", "team-a"), &token);
        let text = rest_json(&token).len();
        // 915 bytes of text here: 706 compressed alone, 371 against the dictionary.
        assert!(cached.rest.len() * 2 < text, "text {text} bytes, cached {} bytes", cached.rest.len());
    }

    #[test]
    fn every_token_of_a_complete_list_is_due_and_a_change_at_once_with_the_caches_keys() {
        let cache = TokenCache::default();
        let mut writer = cache.writer(|_| {});
        let first =
            [Init, InitApply(token("a", "c")), InitApply(token("b", "c")), InitDone, Apply(token("c", "c")), Delete(token("a", "c"))];
        // A relist interrupted by another: only the complete one counts.
        let relist = [Init, InitApply(token("x", "c")), Init, InitApply(token("b", "c")), InitDone];
        let events = futures::stream::iter(first.into_iter().chain(relist).map(Ok)).inspect(move |event| writer(event));
        let due: Vec<Key> = futures::executor::block_on(cache.changes(events).collect());
        let names: Vec<&str> = due.iter().map(|k| &*k.name).collect();
        let (first_list, rest) = names.split_at(2);
        assert_eq!((sorted(first_list), rest), (vec!["a", "b"], &["c", "b"][..]));
        let (cached_b, _) = cache.token(&key("b", "team-a")).unwrap();
        assert!(Arc::ptr_eq(&due[1], &cached_b) || Arc::ptr_eq(&due[0], &cached_b), "the cache's own key, not a copy");
        assert!(Arc::ptr_eq(due.last().unwrap(), &cached_b), "kept through a relist");
    }

    fn sorted<'a>(names: &[&'a str]) -> Vec<&'a str> {
        let mut names = names.to_vec();
        names.sort_unstable();
        names
    }

    #[test]
    fn lists_replace_the_cache_when_complete_and_removals_are_reported_after_they_happened() {
        let cache = TokenCache::default();
        let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (sink, seen) = (removed.clone(), cache.clone());
        // Each removal is reported once the cache no longer holds the token.
        let mut writer = cache.writer(move |r: ObjectRef<NavigatorToken>| {
            assert!(!seen.contains("team-a", &r.name), "{} reported while still cached", r.name);
            sink.lock().unwrap().push(r.name);
        });
        for event in [Init, InitApply(token("a", "c")), InitApply(token("b", "c")), InitApply(token("c", "c"))] {
            writer(&Ok(event));
        }
        assert!(!cache.contains("team-a", "a"), "a list shows once complete");
        writer(&Ok(InitDone));
        writer(&Ok(Apply(token("d", "c"))));
        writer(&Ok(Delete(token("a", "c"))));
        assert_eq!(*removed.lock().unwrap(), ["a"]);
        // b was deleted while the watch was down: the relist lacks it.
        for event in [Init, InitApply(token("c", "c")), InitApply(token("d", "c")), InitDone] {
            writer(&Ok(event));
        }
        assert_eq!(*removed.lock().unwrap(), ["a", "b"]);
        assert!(cache.contains("team-a", "c") && cache.contains("team-a", "d") && !cache.contains("team-a", "b"));
    }
}
