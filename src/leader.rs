//! Leader election on a coordination.k8s.io/v1 Lease, and the shutdown signal it feeds.
//!
//! Written here because the maintained crates (kube-leader-election, kubert) still target older
//! kube releases. Expiry is judged by how long the Lease record has stayed unchanged on this
//! replica's own clock, as client-go does, so clock skew between nodes does not matter.
//!
//! A holder must stop before a standby may take over: each renewal has a deadline inside the
//! lease, goes through a client without retries, and losing the Lease drops the leader's work at
//! once (see [`Lease::lead`]). What must outlive the work (a rotated refresh token not yet
//! stored) may still be written until [`Lease::valid_until`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api_counter::{self, ApiCounter};

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
}

/// The instant by which a holder must have renewed, `last_written` being when its last
/// successful write of the Lease was sent. A standby counts the lease from when it sees that
/// write, which is later, so the holder stops first; the margin (a fifth of the lease) covers
/// clocks running at slightly different rates and the time to stop.
pub fn renew_deadline(last_written: Instant, timing: &Timing) -> Instant {
    last_written + timing.lease_duration - timing.lease_duration / 5
}

/// How a leader's work ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The work finished by itself (a normal shutdown).
    Finished,
    /// Leadership was lost; the work was dropped mid-flight.
    LostLeadership,
}

impl Outcome {
    /// The process exit status: non-zero after a lost leadership, so that the kubelet restarts
    /// the replica (as a standby) and the restart shows in the pod's status.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Finished => 0,
            Outcome::LostLeadership => 1,
        }
    }
}

/// One replica's view of the leader Lease.
#[derive(Clone)]
pub struct Lease {
    api: Api<LeaseObject>,
    name: String,
    identity: String,
    timing: Timing,
    /// When the last successful write of the Lease was sent (acquire or renewal).
    last_written: Arc<Mutex<Option<Instant>>>,
}

impl Lease {
    /// A handle on Lease `name` in `namespace` for the replica `identity`. Its requests go
    /// through a client of its own, built from `config` without kube's retries (a renewal
    /// retried after a 429 or 503 could land after the lease expired), counted by `counter`.
    pub fn new(config: kube::Config, counter: ApiCounter, namespace: &str, name: &str, identity: &str) -> Result<Self, kube::Error> {
        let mut config = config;
        config.default_retry = false;
        let client: Client = api_counter::client(config, counter)?;
        Ok(Lease {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing: Timing::default(),
            last_written: Arc::default(),
        })
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
            // Bounded so that a hung request cannot stall the standby forever.
            match tokio::time::timeout(self.timing.lease_duration, self.try_acquire(&mut last_seen)).await {
                Ok(Ok(true)) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return true;
                }
                Ok(Ok(false)) => {}
                Ok(Err(error)) => warn!(%error, "leader election: could not read or write the Lease"),
                Err(_) => warn!("leader election: the Lease request timed out"),
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
            let sent = Instant::now();
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.written(sent);
                    Ok(true)
                }
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

    /// Runs `work` as the leader: renews the Lease meanwhile and, if leadership is lost, drops
    /// `work` at once, with whatever it has in flight (reconciles, token requests), since another
    /// replica may take over. Releases the Lease when `work` finishes by itself.
    pub async fn lead(&self, work: impl Future<Output = ()>) -> Outcome {
        let stop = Shutdown::default();
        let lost = self.keep(stop.clone());
        let outcome = tokio::select! {
            biased;
            _ = lost.wait() => Outcome::LostLeadership,
            _ = work => Outcome::Finished,
        };
        stop.trigger();
        if outcome == Outcome::Finished {
            self.release().await;
        }
        outcome
    }

    /// Renews the Lease in the background until `stop` fires. The returned signal fires when
    /// leadership is lost: another replica holds the Lease, or no renewal succeeded before
    /// [`renew_deadline`]. Call right after [`Self::acquire`].
    pub fn keep(&self, stop: Shutdown) -> Shutdown {
        let lost = Shutdown::default();
        let (lease, signal) = (self.clone(), lost.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait() => {}
                reason = lease.renew_until_lost() => {
                    warn!(lease = %lease.name, reason, "leadership lost; stopping");
                    signal.trigger();
                }
            }
        });
        lost
    }

    /// Renews every renew interval (every retry interval after a failure); returns why
    /// leadership was lost.
    async fn renew_until_lost(&self) -> &'static str {
        let (mut wait, started) = (self.timing.renew_interval, Instant::now());
        loop {
            let last_written = self.last_written.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(started);
            let deadline = renew_deadline(last_written, &self.timing);
            tokio::time::sleep_until(deadline.min(Instant::now() + wait)).await;
            if Instant::now() >= deadline {
                return "no renewal succeeded within the lease";
            }
            match tokio::time::timeout_at(deadline, self.renew()).await {
                Ok(Ok(true)) => wait = self.timing.renew_interval,
                Ok(Ok(false)) => return "another replica holds the Lease",
                Ok(Err(error)) => {
                    warn!(%error, "Lease renewal failed; retrying");
                    wait = self.timing.retry_interval;
                }
                Err(_) => return "no renewal succeeded within the lease",
            }
        }
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

    /// The last instant this replica may still write as the leader after losing the Lease: when
    /// the Lease expires counted from the send of its last successful write (a standby counts
    /// from when it sees that write, later), less a tenth of the lease for clocks running at
    /// slightly different rates. `None` before the first write. `main` flushes the rotated
    /// refresh tokens still pending until then, never after: another replica may lead then.
    pub fn valid_until(&self) -> Option<Instant> {
        let last_written = (*self.last_written.lock().unwrap_or_else(|p| p.into_inner()))?;
        Some(last_written + self.timing.lease_duration - self.timing.lease_duration / 10)
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
        let sent = Instant::now();
        match self.api.replace(&self.name, &PostParams::default(), &current).await {
            Ok(_) => {
                self.written(sent);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn written(&self, sent: Instant) {
        *self.last_written.lock().unwrap_or_else(|p| p.into_inner()) = Some(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renew_deadline_lies_inside_the_lease_and_after_a_renew_interval() {
        let test_timing = Timing {
            lease_duration: Duration::from_secs(2),
            renew_interval: Duration::from_millis(500),
            retry_interval: Duration::from_millis(100),
        };
        for timing in [Timing::default(), test_timing] {
            let last = Instant::now();
            let deadline = renew_deadline(last, &timing);
            assert!(deadline < last + timing.lease_duration, "{timing:?}");
            // Room for a failed attempt and a retry after the regular renewal.
            assert!(deadline > last + timing.renew_interval + timing.retry_interval, "{timing:?}");
        }
        let last = Instant::now();
        assert_eq!(renew_deadline(last, &Timing::default()), last + Duration::from_secs(12));
    }

    #[test]
    fn only_a_lost_leadership_exits_non_zero() {
        assert_eq!(Outcome::Finished.exit_code(), 0);
        assert_eq!(Outcome::LostLeadership.exit_code(), 1);
    }
}
