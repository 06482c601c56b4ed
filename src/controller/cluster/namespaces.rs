//! The Namespaces a selection reads: name, labels and whether each is being deleted.
//!
//! A kube `Store` of the metadata-only watch kept every Namespace's whole `ObjectMeta`, its type
//! strings and a keyed reference with uid and resourceVersion: about 1.5 KiB per Namespace,
//! 14.6 MiB of the operator's RSS at 10,000 (bench/RESULTS.md). This cache keeps what
//! [`NamespaceInfo`] needs, and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::plan::NamespaceInfo;

/// What is kept of one Namespace, under its name.
struct CachedNamespace {
    labels: Box<[(Box<str>, Box<str>)]>,
    terminating: bool,
}

impl From<&PartialObjectMeta<Namespace>> for CachedNamespace {
    fn from(namespace: &PartialObjectMeta<Namespace>) -> Self {
        let labels = namespace.labels().iter().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect();
        CachedNamespace { labels, terminating: namespace.metadata.deletion_timestamp.is_some() }
    }
}

/// The cache of Namespaces by name, filled by [`NamespaceCache::writer`].
#[derive(Clone, Default)]
pub(super) struct NamespaceCache(Arc<RwLock<HashMap<Box<str>, CachedNamespace>>>);

impl NamespaceCache {
    /// Every cached Namespace, as the plan reads them.
    pub(super) fn infos(&self) -> Vec<NamespaceInfo> {
        let entries = self.0.read().unwrap_or_else(|p| p.into_inner());
        let info = |(name, cached): (&str, &CachedNamespace)| NamespaceInfo {
            name: name.to_owned(),
            labels: cached.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            terminating: cached.terminating,
        };
        entries.iter().map(|(name, cached)| info((name, cached))).collect()
    }

    /// A handler of the Namespace watch's events that keeps the cache as kube's reflector keeps
    /// a `Store`: a (re)list is collected aside and replaces the whole cache once complete.
    pub(super) fn writer(&self) -> impl FnMut(&watcher::Event<PartialObjectMeta<Namespace>>) + use<> {
        let cache = self.0.clone();
        let mut relist = HashMap::new();
        move |event| {
            let write = || cache.write().unwrap_or_else(|p| p.into_inner());
            let name = |ns: &PartialObjectMeta<Namespace>| ns.name_any().into_boxed_str();
            match event {
                watcher::Event::Init => relist = HashMap::new(),
                watcher::Event::InitApply(ns) => drop(relist.insert(name(ns), ns.into())),
                watcher::Event::InitDone => *write() = std::mem::take(&mut relist),
                watcher::Event::Apply(ns) => drop(write().insert(name(ns), ns.into())),
                watcher::Event::Delete(ns) => drop(write().remove(&name(ns))),
            }
        }
    }
}

/// One signal per Namespace change that may change a selection, sent once the cache holds it
/// (the stream must pass [`NamespaceCache::writer`] first): each Apply and Delete, and the end
/// of each relist after the first. Not the relist's objects one by one: until it is complete the
/// cache still holds the old list, so a namespace created or deleted while the watch was down
/// would wait for the next refresh.
pub(super) fn selection_changes(
    events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Namespace>>, watcher::Error>>,
) -> impl Stream<Item = ()> {
    let mut listed = false;
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::InitDone) => std::mem::replace(&mut listed, true),
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => true,
            _ => false,
        };
        std::future::ready(changed.then_some(()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(name: &str, labels: &[(&str, &str)], terminating: bool) -> PartialObjectMeta<Namespace> {
        let mut meta = PartialObjectMeta::<Namespace>::default();
        meta.metadata.name = Some(name.into());
        meta.metadata.uid = Some(format!("uid-{name}"));
        meta.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
        meta.metadata.deletion_timestamp =
            terminating.then(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2026-12-04T10:00:00Z".parse().unwrap()));
        meta
    }

    /// A cached Namespace as the test compares it: name, labels, terminating.
    type Seen = (String, Vec<(String, String)>, bool);

    fn seen(cache: &NamespaceCache) -> Vec<Seen> {
        let mut infos: Vec<_> = cache.infos().into_iter().map(|i| (i.name, i.labels.into_iter().collect(), i.terminating)).collect();
        infos.sort();
        infos
    }

    #[test]
    fn keeps_labels_and_deletion_and_replaces_everything_on_a_relist() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let cache = NamespaceCache::default();
        let mut write = cache.writer();
        for event in [Init, InitApply(namespace("a", &[("team", "x")], false)), InitApply(namespace("b", &[], true)), InitDone] {
            write(&event);
        }
        let owned = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(seen(&cache), [("a".into(), vec![owned("team", "x")], false), ("b".into(), vec![], true)]);
        write(&Apply(namespace("a", &[("team", "y"), ("tier", "1")], false)));
        write(&Delete(namespace("b", &[], true)));
        assert_eq!(seen(&cache), [("a".into(), vec![owned("team", "y"), owned("tier", "1")], false)]);
        // c appeared and a went while the watch was down: the relist replaces the cache whole.
        write(&Init);
        write(&InitApply(namespace("c", &[], false)));
        assert_eq!(seen(&cache)[0].0, "a", "the cache stays as it was until the relist is complete");
        write(&InitDone);
        assert_eq!(seen(&cache), [("c".into(), vec![], false)]);
    }

    #[test]
    fn a_selection_change_is_signalled_once_the_cache_holds_it() {
        use futures::{StreamExt, TryStreamExt};
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let cache = NamespaceCache::default();
        let events = [
            Init,
            InitApply(namespace("a", &[], false)),
            InitDone,
            Apply(namespace("b", &[], false)),
            Delete(namespace("a", &[], false)),
            // The watch was down: c appeared, b went.
            Init,
            InitApply(namespace("c", &[], false)),
            InitDone,
        ];
        let stream = futures::stream::iter(events.map(Ok)).inspect_ok(cache.writer());
        let names = || seen(&cache).into_iter().map(|(name, ..)| name).collect::<Vec<_>>();
        let signalled: Vec<Vec<String>> = futures::executor::block_on(selection_changes(stream).map(|()| names()).collect());
        // None for the first list (every ClusterNavigatorToken is reconciled when it is listed).
        assert_eq!(signalled, [vec!["a", "b"], vec!["b"], vec!["c"]]);
    }
}
