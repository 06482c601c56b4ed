//! Leader election on a Lease, against the loopback API server: one holder at a time, a standby
//! takes over within the lease duration when the holder stops renewing, and at once on release.

use std::time::{Duration, Instant};

use kube::{Client, Config};
use navigator_token_operator::leader::{Lease, Shutdown, Timing};
use testkit::apiserver::ApiServer;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(2),
    renew_interval: Duration::from_millis(500),
    retry_interval: Duration::from_millis(100),
};

async fn replicas() -> (ApiServer, Lease, Lease) {
    let api = ApiServer::start().await;
    api.insert(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "operators"}}));
    let client = Client::try_from(Config::new(api.url().parse().unwrap())).unwrap();
    let lease = |who: &str| Lease::new(client.clone(), "operators", "navigator-token-operator", who).with_timing(TIMING);
    let (a, b) = (lease("replica-a"), lease("replica-b"));
    (api, a, b)
}

async fn holder(api: &ApiServer) -> Option<String> {
    let lease = api.get("coordination.k8s.io/v1", "leases", Some("operators"), "navigator-token-operator")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn one_holder_and_takeover_after_expiry() {
    let (api, a, b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    assert_eq!(holder(&api).await.as_deref(), Some("replica-a"));
    let a_running = Shutdown::default();
    let a_lost = a.keep(a_running.clone());

    // While A renews, B cannot take the Lease, even after several lease durations.
    let mut seen = None;
    for _ in 0..30 {
        assert!(!b.try_acquire(&mut seen).await.unwrap(), "B took a Lease A is renewing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!a_lost.is_triggered());

    // A stops renewing (crash): B takes over within about one lease duration.
    a_running.trigger();
    let started = Instant::now();
    let b_won = tokio::time::timeout(Duration::from_secs(10), b.acquire(Shutdown::default())).await.unwrap();
    assert!(b_won);
    assert!(started.elapsed() < TIMING.lease_duration + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(holder(&api).await.as_deref(), Some("replica-b"));
    let lease = api.get("coordination.k8s.io/v1", "leases", Some("operators"), "navigator-token-operator").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // A notices it lost leadership when it renews.
    assert!(!a.renew().await.unwrap());
}

#[tokio::test]
async fn release_hands_over_at_once() {
    let (api, a, b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    a.release().await;
    assert_eq!(holder(&api).await, None);
    let started = Instant::now();
    assert!(tokio::time::timeout(Duration::from_secs(5), b.acquire(Shutdown::default())).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(1), "release should not wait for expiry: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_standby_gives_up_when_shut_down() {
    let (_api, a, b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    let _keep = a.keep(Shutdown::default());
    let stop = Shutdown::default();
    let waiting = tokio::spawn({
        let (b, stop) = (b.clone(), stop.clone());
        async move { b.acquire(stop).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.trigger();
    assert!(!tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap());
}

#[tokio::test]
async fn losing_the_lease_to_another_writer_stops_the_holder() {
    let (api, a, _b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    let lost = a.keep(Shutdown::default());
    // Someone else takes the Lease (e.g. a replica that judged it expired during a partition).
    let mut lease = api.get("coordination.k8s.io/v1", "leases", Some("operators"), "navigator-token-operator").unwrap();
    lease["spec"]["holderIdentity"] = "replica-c".into();
    api.insert(lease);
    tokio::time::timeout(Duration::from_secs(5), lost.clone().wait()).await.expect("the holder notices within a renew interval");
}
