//! The NavigatorToken work queue: kube's `Controller` without its scheduler's cost per token.
//!
//! kube-runtime's scheduler keeps every pending request twice, each with a whole `ObjectRef`
//! (uid and resourceVersion included), and after a restart all N NavigatorTokens are pending at
//! once: 0.74 KiB per NavigatorToken, a quarter of the operator's memory (bench/RESULTS.md). Here
//! a waiting token costs one shared key and the instant it is due. The rules are kube's: a
//! token runs once at a time; a trigger or requeue for it while it runs waits for the run to
//! end; of two times asked for one token, the earlier wins; a token gone from the cache when
//! it is due is skipped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tracing::error;

use super::plan::Action;
use crate::crd::NavigatorToken;

/// A NavigatorToken's namespace and name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    pub(super) namespace: Box<str>,
    pub(super) name: Box<str>,
}

/// A NavigatorToken's place in the queue and the cache, shared by both.
pub(super) type Key = Arc<TokenKey>;

/// The key of the NavigatorToken `name` in `namespace`.
pub(super) fn key(name: &str, namespace: &str) -> Key {
    Arc::new(TokenKey { namespace: namespace.into(), name: name.into() })
}

/// How soon a reconcile that panicked runs again.
const AFTER_PANIC: Duration = Duration::from_secs(5);

/// Which token is due when: each key at most once, at the earliest time asked for it.
#[derive(Default)]
struct Schedule {
    /// When each waiting key is due, with the tie-breaker that orders it in `by_time`.
    due: HashMap<Key, (Instant, u64)>,
    by_time: BTreeMap<(Instant, u64), Key>,
    next_seq: u64,
    /// Keys whose reconcile is under way: not started again until it ends.
    running: HashSet<Key>,
}

impl Schedule {
    /// Asks for `key` to run at `at`, unless it is already due no later.
    fn ask(&mut self, key: Key, at: Instant) {
        if let Some(&(when, seq)) = self.due.get(&key) {
            if when <= at {
                return;
            }
            self.by_time.remove(&(when, seq));
        }
        self.next_seq += 1;
        self.by_time.insert((at, self.next_seq), key.clone());
        self.due.insert(key, (at, self.next_seq));
    }

    /// The earliest key due at or before `now` that is not running, taken off the schedule and
    /// marked running.
    fn start_due(&mut self, now: Instant) -> Option<Key> {
        let (&slot, key) = self.by_time.range(..=(now, u64::MAX)).find(|(_, key)| !self.running.contains(*key))?;
        let key = key.clone();
        self.by_time.remove(&slot);
        self.due.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// When the next key that is not running is due.
    fn next_due(&self) -> Option<Instant> {
        self.by_time.iter().find(|(_, key)| !self.running.contains(*key)).map(|(&(at, _), _)| at)
    }

    /// Records the end of `key`'s run and the next run its reconcile asked for.
    fn finished(&mut self, key: Key, next: Action, now: Instant) {
        self.running.remove(&key);
        if let Some(after) = next.requeue_after {
            self.ask(key, now + after);
        }
    }
}

/// A spawned reconcile, aborted when dropped: dropping the queue (a lost Lease drops the
/// controller) must stop this replica's reconciles, as dropping kube's `Controller` did.
struct Spawned(tokio::task::JoinHandle<Action>);

impl Future for Spawned {
    type Output = Result<Action, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `reconcile` for each NavigatorToken that `triggers` names (at once) or that a reconcile
/// asked to see again (when it asked), at most `concurrency` at a time (0: no limit), if
/// `lookup` finds it: `lookup` gives the token and the key to keep (the cache's, shared).
/// Once `shutdown` resolves or `triggers` ends, starts nothing more and returns when the
/// reconciles under way have ended.
pub(super) async fn run<L, R, F>(
    lookup: L,
    triggers: impl Stream<Item = Key>,
    concurrency: u16,
    reconcile: R,
    shutdown: impl Future<Output = ()>,
) where
    L: Fn(&Key) -> Option<(Key, Arc<NavigatorToken>)>,
    R: Fn(Arc<NavigatorToken>) -> F,
    F: Future<Output = Action> + Send + 'static,
{
    let limit = if concurrency == 0 { usize::MAX } else { usize::from(concurrency) };
    let mut schedule = Schedule::default();
    let mut running = FuturesUnordered::new();
    let mut triggers = std::pin::pin!(triggers);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    loop {
        while !stopping && running.len() < limit {
            let Some(asked) = schedule.start_due(Instant::now()) else { break };
            let Some((key, token)) = lookup(&asked) else {
                // Deleted since it was asked for.
                schedule.running.remove(&asked);
                continue;
            };
            // Spawned: reconciles use both cores, and a panic stays in its task.
            let task = Spawned(tokio::spawn(reconcile(token)));
            running.push(async move { (key, task.await) });
        }
        if stopping && running.is_empty() {
            return;
        }
        let next_due = schedule.next_due().filter(|_| !stopping && running.len() < limit);
        tokio::select! {
            Some((key, ended)) = running.next() => {
                let next = ended.unwrap_or_else(|panic| {
                    error!(namespace = &*key.namespace, navigatortoken = &*key.name, %panic, "reconcile panicked; retrying");
                    Action::requeue(AFTER_PANIC)
                });
                schedule.finished(key, next, Instant::now());
            }
            trigger = triggers.next(), if !stopping => match trigger {
                Some(key) => schedule.ask(key, Instant::now()),
                None => stopping = true,
            },
            () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
            () = &mut shutdown, if !stopping => stopping = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn token(name: &str) -> NavigatorToken {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"orgId": "o", "credentialsSecretRef": {"name": "c"}},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn dropping_the_queue_stops_the_reconciles_under_way() {
        let cached: HashMap<Key, Arc<NavigatorToken>> = [("a", "ns")].map(|(name, ns)| (key(name, ns), Arc::new(token(name)))).into();
        let lookup = |asked: &Key| cached.get_key_value(asked).map(|(key, token)| (key.clone(), token.clone()));
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let started_tx = std::sync::Mutex::new(Some(started_tx));
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = finished.clone();
        let reconcile = move |_| {
            let (started_tx, done) = (started_tx.lock().unwrap().take(), done.clone());
            async move {
                started_tx.map(|tx| tx.send(()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                Action::await_change()
            }
        };
        let triggers = futures::stream::iter([key("a", "ns")]).chain(futures::stream::pending());
        let queue = run(lookup, triggers, 1, reconcile, std::future::pending());
        // The queue is dropped (as a lost Lease drops the controller) once its reconcile started.
        tokio::select! {
            () = queue => unreachable!("the queue runs until dropped"),
            _ = started => {}
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!finished.load(std::sync::atomic::Ordering::SeqCst), "the reconcile went on after the queue was dropped");
    }

    #[test]
    fn the_earlier_time_wins_and_a_running_key_waits() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.ask(key("a", "ns"), t0 + Duration::from_secs(10));
        s.ask(key("a", "ns"), t0 + Duration::from_secs(5));
        s.ask(key("a", "ns"), t0 + Duration::from_secs(20));
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.start_due(t0 + Duration::from_secs(4)), None, "not due yet");
        let a = s.start_due(t0 + Duration::from_secs(5)).expect("due");
        assert_eq!(s.next_due(), None, "nothing else waits");
        // Asked for while it runs: due, but not started until the run ends.
        s.ask(key("a", "ns"), t0);
        s.ask(key("b", "ns"), t0 + Duration::from_secs(1));
        assert_eq!(s.start_due(t0 + Duration::from_secs(6)).map(|k| k.name.to_string()).as_deref(), Some("b"));
        assert_eq!(s.start_due(t0 + Duration::from_secs(6)), None, "a still runs");
        s.finished(a, Action::requeue(Duration::from_secs(60)), t0 + Duration::from_secs(7));
        // The trigger during the run is earlier than the requeue the run asked for.
        assert_eq!(s.start_due(t0 + Duration::from_secs(7)).map(|k| k.name.to_string()).as_deref(), Some("a"));
        assert!(s.due.is_empty() && s.by_time.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn reconciles_run_one_at_a_time_per_token_and_requeue_when_asked() {
        let cached: HashMap<Key, Arc<NavigatorToken>> = ["a", "b"].map(|name| (key(name, "ns"), Arc::new(token(name)))).into();
        let lookup = |asked: &Key| cached.get_key_value(asked).map(|(key, token)| (key.clone(), token.clone()));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        for name in ["a", "b", "a", "gone"] {
            tx.unbounded_send(key(name, "ns")).unwrap();
        }
        let started = Instant::now();
        let log = runs.clone();
        let reconcile = move |t: Arc<NavigatorToken>| {
            let log = log.clone();
            async move {
                let name = t.metadata.name.clone().unwrap();
                log.lock().unwrap().push((name.clone(), started.elapsed().as_secs()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                if name == "a" { Action::requeue(Duration::from_secs(30)) } else { Action::await_change() }
            }
        };
        let stop = tokio::time::sleep(Duration::from_secs(100));
        run(lookup, rx, 1, reconcile, stop).await;
        drop(tx);
        // One at a time (concurrency 1), in the order asked; the second trigger of a came while
        // a ran, so a runs again after b; "gone" is not in the cache; then a runs every 31 s
        // (a 1 s run, then the 30 s it asked for) until the stop.
        let expected = [("a", 0), ("b", 1), ("a", 2), ("a", 33), ("a", 64), ("a", 95)];
        assert_eq!(*runs.lock().unwrap(), expected.map(|(name, at)| (name.to_owned(), at)));
    }
}
