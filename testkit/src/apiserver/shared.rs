//! State shared by the `ApiServer` handles and the request handlers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::rbac::Rbac;
use super::store::Store;
use super::{Fault, RequestCounts};

/// State reachable from the request handlers.
pub(super) struct Shared {
    pub(super) store: Mutex<Store>,
    pub(super) meter: Mutex<Meter>,
    pub(super) rbac: Mutex<Rbac>,
    /// Plural → how late watch events of that resource are delivered (`set_watch_lag`).
    pub(super) watch_lags: Mutex<HashMap<String, Duration>>,
    /// Every change of this value ends all open watches; `shutdown` also stops the server.
    pub(super) control: watch::Sender<Control>,
    pub(super) watches: AtomicUsize,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Control {
    pub(super) epoch: u64,
    pub(super) shutdown: bool,
}

#[derive(Default)]
pub(super) struct Meter {
    pub(super) counts: RequestCounts,
    pub(super) faults: VecDeque<Fault>,
}

/// Locks a mutex, carrying on after a panic elsewhere: the data stays usable for a test server.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            store: Mutex::new(Store::new()),
            meter: Mutex::new(Meter::default()),
            rbac: Mutex::new(Rbac::default()),
            watch_lags: Mutex::default(),
            control: watch::Sender::new(Control::default()),
            watches: AtomicUsize::new(0),
        }
    }

    /// Runs `f` with the store locked; the lock is released before the result is used, so
    /// serialisation of responses happens outside it.
    pub(super) fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut lock(&self.store))
    }

    pub(super) fn shutdown(&self) {
        self.control.send_modify(|c| {
            c.shutdown = true;
            c.epoch += 1;
        });
    }

    pub(super) fn count(&self, verb: &str, resource: &str) {
        lock(&self.meter).counts.add(verb, resource);
    }
}
