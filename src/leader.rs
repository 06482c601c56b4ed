//! Leader election on a coordination.k8s.io/v1 Lease, and the shutdown signal it feeds.
//!
//! Written here because the maintained crates (kube-leader-election, kubert) still target older
//! kube releases. Expiry is judged by how long the Lease record has stayed unchanged on this
//! replica's own clock, as client-go does, so clock skew between nodes does not matter.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a Lease is valid without renewal, how often the holder renews it, and how often a
/// standby checks whether it is free.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Validity without renewal.
    pub lease_duration: Duration,
    /// Renewal period of the holder.
    pub renew_interval: Duration,
    /// Polling period of a standby.
    pub retry_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { lease_duration: Duration::from_secs(15), renew_interval: Duration::from_secs(5), retry_interval: Duration::from_secs(2) }
    }
}

/// A clonable one-shot stop signal.
#[derive(Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Fires the signal.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Resolves once fired.
    pub fn wait(self) -> impl Future<Output = ()> + Send + Sync + 'static {
        self.0.cancelled_owned()
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// A signal that fires when this one does, or by itself.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }
}

/// One replica's view of the leader Lease.
#[derive(Clone)]
pub struct Lease {
    api: Api<LeaseObject>,
    name: String,
    identity: String,
    timing: Timing,
}

impl Lease {
    /// A handle on Lease `name` in `namespace` for the replica `identity`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Lease { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), timing: Timing::default() }
    }

    /// The same with other timing (tests use seconds instead of the defaults).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Waits until this replica holds the Lease (true) or `shutdown` fires (false).
    pub async fn acquire(&self, shutdown: Shutdown) -> bool {
        let mut last_seen: Option<(String, Instant)> = None;
        loop {
            match self.try_acquire(&mut last_seen).await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return true;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "leader election: could not read or write the Lease"),
            }
            tokio::select! {
                _ = shutdown.clone().wait() => return false,
                _ = tokio::time::sleep(self.timing.retry_interval) => {}
            }
        }
    }

    /// One attempt. `last_seen` remembers the record's resourceVersion and when it last changed.
    pub async fn try_acquire(&self, last_seen: &mut Option<(String, Instant)>) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = LeaseObject {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(0, Timestamp::now())),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let version = current.resource_version().unwrap_or_default();
        let now = Instant::now();
        let unchanged_since = match last_seen {
            Some((seen, since)) if *seen == version => *since,
            _ => now,
        };
        *last_seen = Some((version, unchanged_since));
        let duration = Duration::from_secs(spec.lease_duration_seconds.map_or(self.timing.lease_duration.as_secs(), |s| s.max(1) as u64));
        let free = holder.is_empty() || holder == self.identity || now.duration_since(unchanged_since) >= duration;
        if !free {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.identity);
        self.write(current, self.spec(transitions, Timestamp::now())).await
    }

    /// Renews the Lease in the background; the returned signal fires when `shutdown` does or
    /// when leadership is lost (then the controllers must stop at once).
    pub fn keep(&self, shutdown: Shutdown) -> Shutdown {
        let lost = shutdown.child();
        let (lease, signal) = (self.clone(), lost.clone());
        tokio::spawn(async move {
            let mut last_renewed = Instant::now();
            loop {
                tokio::select! {
                    _ = signal.clone().wait() => return,
                    _ = tokio::time::sleep(lease.timing.renew_interval) => {}
                }
                match lease.renew().await {
                    Ok(true) => last_renewed = Instant::now(),
                    Ok(false) => {
                        warn!(lease = %lease.name, "leadership lost to another replica; stopping");
                        signal.trigger();
                        return;
                    }
                    Err(error) if last_renewed.elapsed() + lease.timing.renew_interval >= lease.timing.lease_duration => {
                        warn!(%error, "could not renew the Lease before it expires; stopping");
                        signal.trigger();
                        return;
                    }
                    Err(error) => warn!(%error, "Lease renewal failed; retrying"),
                }
            }
        });
        lost
    }

    /// Renews if still the holder; false when another replica holds it.
    pub async fn renew(&self) -> Result<bool, kube::Error> {
        let current = self.api.get(&self.name).await?;
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let mut renewed = spec;
        renewed.renew_time = Some(MicroTime(Timestamp::now()));
        self.write(current, renewed).await
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(&self) {
        let Ok(current) = self.api.get(&self.name).await else { return };
        let mut spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self.write(current, spec).await {
            Ok(_) => info!(lease = %self.name, "released leadership"),
            Err(error) => warn!(%error, "could not release the Lease; a standby takes over when it expires"),
        }
    }

    fn spec(&self, transitions: i32, now: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Replaces the Lease guarded by its resourceVersion: a concurrent writer makes this a 409 (false).
    async fn write(&self, mut current: LeaseObject, spec: LeaseSpec) -> Result<bool, kube::Error> {
        current.spec = Some(spec);
        current.metadata.managed_fields = None;
        match self.api.replace(&self.name, &PostParams::default(), &current).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
