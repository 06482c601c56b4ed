//! Watch plumbing: label-selected watches, the caches they feed, and first-list tracking.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

/// kubectl apply's copy of the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(super) fn scoped_api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(
    client: &Client,
    ns: Option<&str>,
) -> Api<K> {
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch whose lists come in pages of at most 100 (fewer if `config` asks for fewer): the page
/// being decoded is a large part of the operator's peak memory.
pub(super) fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let page_size = config.page_size.map_or(100, |asked| asked.min(100));
    watcher(api, config.page_size(page_size)).default_backoff()
}

/// A watch feeding a kube `Store` (without the metadata nobody reads), counting towards `sync`.
/// `on_removed` hears of every object that leaves the store: a deleted one once the store no
/// longer holds it, one missing from a relist as the relist completes (see [`relist_removals`]).
pub(super) fn cached_watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    sync: &SyncTracker,
    on_removed: F,
) -> (Store<K>, impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K, F>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(ObjectRef<K>) + Clone + Send + 'static,
{
    let (store, writer) = reflector::store();
    // `relist_removals` comes before `reflect` (it compares a relist with the store's previous
    // state), the marker after it, so that "synced" implies the store holds the whole list.
    let on_relist_removed = on_removed.clone();
    let events = watch(api, config)
        .modify(strip_unread_metadata)
        .inspect(relist_removals(store.clone(), on_relist_removed))
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(object)) = event {
                on_removed(ObjectRef::from_obj(object));
            }
        })
        .inspect(sync.marker());
    (store, events)
}

/// An `inspect` callback, placed before the store's `reflect`, that reports each object missing
/// from a relist (deleted while the watch was down, when no Delete event is ever sent). Nothing
/// reconciles an object that is gone, so this is where state kept per object must be dropped.
pub(super) fn relist_removals<K>(
    store: Store<K>,
    mut on_removed: impl FnMut(ObjectRef<K>),
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    // Filled only while a relist is under way.
    let mut relisted: HashSet<ObjectRef<K>> = HashSet::new();
    move |event| match event {
        Ok(watcher::Event::Init) => relisted.clear(),
        Ok(watcher::Event::InitApply(object)) => {
            relisted.insert(ObjectRef::from_obj(object));
        }
        Ok(watcher::Event::InitDone) => {
            // The store still holds the state from before the relist here.
            for gone in store.state().iter().map(|o| ObjectRef::from_obj(&**o)).filter(|r| !relisted.contains(r)) {
                on_removed(gone);
            }
            relisted = HashSet::new();
        }
        _ => {}
    }
}

/// The objects of a related watch whose changes should reconcile their NavigatorTokens: all
/// touched objects, except those of the first list. That list triggers nothing because every
/// NavigatorToken is reconciled when its own first list arrives; triggering again from 10,000
/// listed Secrets parked 10,000 more requests in kube's scheduler, each carrying a copy of the
/// Secret's reference (a dozen strings). Relists still trigger: changes may hide in them. Watch
/// errors are dropped, as `touched_objects` would pass them on to be dropped; the watch retries.
pub(super) fn changes_after_first_list<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    let mut listed = false;
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::InitDone) => {
                listed = true;
                None
            }
            Ok(watcher::Event::InitApply(object)) if listed => Some(object),
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => Some(object),
            _ => None,
        };
        std::future::ready(changed.map(Ok))
    })
}

/// Counts watches that have completed their first list; the channel turns true when all have.
pub(super) struct SyncTracker {
    remaining: Arc<std::sync::atomic::AtomicUsize>,
    sender: Arc<tokio::sync::watch::Sender<bool>>,
}

impl SyncTracker {
    pub(super) fn new(watches: usize) -> Self {
        SyncTracker { remaining: Arc::new(watches.into()), sender: Arc::new(tokio::sync::watch::channel(false).0) }
    }

    pub(super) fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.sender.subscribe()
    }

    /// An `inspect` callback for one watch stream: counts its first InitDone.
    pub(super) fn marker<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let (remaining, sender) = (self.remaining.clone(), self.sender.clone());
        let mut counted = false;
        move |event| {
            if !counted && matches!(event, Ok(watcher::Event::InitDone)) {
                counted = true;
                if remaining.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    sender.send_replace(true);
                }
            }
        }
    }
}

/// managedFields and kubectl's last-applied copy of the object are large and unused here:
/// dropping them keeps the caches small (and the last-applied copy of a credentials Secret
/// holds its data in clear).
pub(super) fn strip_unread_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;
    use kube::ResourceExt;

    use super::*;

    fn secret(name: &str) -> Secret {
        Secret { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn only_changes_after_the_first_list_trigger_reconciles() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let events = [Init, InitApply(secret("listed")), InitDone, Apply(secret("changed")), Delete(secret("deleted"))];
        let relist = [Init, InitApply(secret("relisted")), InitDone];
        let stream = futures::stream::iter(events.into_iter().chain(relist).map(Ok));
        let triggered: Vec<String> = futures::executor::block_on(changes_after_first_list(stream).map(|s| s.unwrap().name_any()).collect());
        assert_eq!(triggered, ["changed", "deleted", "relisted"]);
    }

    #[test]
    fn relist_removals_reports_objects_missing_from_a_relist() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let (store, mut writer) = reflector::store::<Secret>();
        let removed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = removed.clone();
        let mut inspect = relist_removals(store, move |r: ObjectRef<Secret>| sink.lock().unwrap().push(r.name));
        let mut feed = |event: watcher::Event<Secret>| {
            inspect(&Ok(event.clone()));
            writer.apply_watcher_event(&event);
        };
        for event in [Init, InitApply(secret("a")), InitApply(secret("b")), InitApply(secret("c")), InitDone] {
            feed(event);
        }
        assert!(removed.lock().unwrap().is_empty(), "the first list removes nothing");
        feed(Apply(secret("d")));
        feed(Delete(secret("a")));
        assert!(removed.lock().unwrap().is_empty(), "a Delete is reported after the store's reflect, not here");
        // b was deleted while the watch was down: the relist lacks it.
        for event in [Init, InitApply(secret("c")), InitApply(secret("d")), InitDone] {
            feed(event);
        }
        assert_eq!(*removed.lock().unwrap(), ["b"]);
    }
}
