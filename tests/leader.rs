//! Leader election on a Lease, against the test API server (or the real one
//! `NAVIGATOR_TEST_KUBECONFIG` names, for the tests that inject no fault): one holder at a time, a standby
//! takes over within the lease duration when the holder stops renewing, and at once on release.
//! A holder whose renewals are slow or failing gives up before its lease expires, drops its work
//! in flight, and the binary then exits non-zero, after writing a rotated refresh token still
//! pending while the lease it held lasts.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use k8s_openapi::api::coordination::v1::Lease as LeaseObject;
use navigator_token_operator::api_counter::ApiCounter;
use navigator_token_operator::leader::{Lease, Outcome, Shutdown, Timing};
use serde_json::json;
use support::Harness;
use testkit::apiserver::{ApiServer, Fault, FaultKind};
use testkit::token_server::Scripted;

const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(2),
    renew_interval: Duration::from_millis(500),
    retry_interval: Duration::from_millis(100),
};

/// Two replicas' Leases in the harness's namespace.
async fn replicas() -> (Harness, Lease, Lease) {
    let h = Harness::new(Duration::from_secs(3600)).await;
    let lease = |who: &str| {
        Lease::new(h.config.clone(), ApiCounter::default(), &h.ns, "navigator-token-operator", who).unwrap().with_timing(TIMING)
    };
    let (a, b) = (lease("replica-a"), lease("replica-b"));
    (h, a, b)
}

fn leases(h: &Harness) -> kube::Api<LeaseObject> {
    kube::Api::namespaced(h.client.clone(), &h.ns)
}

async fn lease_object(h: &Harness) -> Option<LeaseObject> {
    leases(h).get_opt("navigator-token-operator").await.unwrap()
}

async fn holder(h: &Harness) -> Option<String> {
    lease_object(h).await?.spec?.holder_identity
}

/// Another writer takes the Lease (e.g. a replica that judged it expired during a partition).
async fn steal(h: &Harness, by: Option<&str>) {
    let mut lease = lease_object(h).await.unwrap();
    lease.spec.get_or_insert_default().holder_identity = by.map(str::to_owned);
    leases(h).replace("navigator-token-operator", &Default::default(), &lease).await.unwrap();
}

/// The test API server, for the tests that inject faults; None (after saying so) on a real one.
fn fault_controls<'a>(h: &'a Harness, test: &str) -> Option<&'a ApiServer> {
    if support::skip_on_real_cluster(test) {
        return None;
    }
    h.api.as_ref()
}

#[tokio::test]
async fn one_holder_and_takeover_after_expiry() {
    let (h, a, b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    assert_eq!(holder(&h).await.as_deref(), Some("replica-a"));
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
    assert_eq!(holder(&h).await.as_deref(), Some("replica-b"));
    assert_eq!(lease_object(&h).await.unwrap().spec.unwrap().lease_transitions, Some(1));

    // A notices it lost leadership when it renews.
    assert!(!a.renew().await.unwrap());
}

#[tokio::test]
async fn release_hands_over_at_once() {
    let (h, a, b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    a.release().await;
    assert_eq!(holder(&h).await, None);
    let started = Instant::now();
    assert!(tokio::time::timeout(Duration::from_secs(5), b.acquire(Shutdown::default())).await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(1), "release should not wait for expiry: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_standby_gives_up_when_shut_down() {
    let (_h, a, b) = replicas().await;
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
    let (h, a, _b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    let lost = a.keep(Shutdown::default());
    steal(&h, Some("replica-c")).await;
    tokio::time::timeout(Duration::from_secs(5), lost.clone().wait()).await.expect("the holder notices within a renew interval");
}

#[tokio::test]
async fn a_renewal_slower_than_the_lease_gives_up_leadership_before_the_lease_expires() {
    let (h, a, _b) = replicas().await;
    let Some(api) = fault_controls(&h, "a_renewal_slower_than_the_lease_gives_up_leadership_before_the_lease_expires") else { return };
    assert!(a.acquire(Shutdown::default()).await);
    let lost = a.keep(Shutdown::default());
    tokio::time::sleep(TIMING.renew_interval * 2).await;
    assert!(!lost.is_triggered());
    // From now on every Lease write hangs far longer than the lease (an overloaded API server).
    api.inject(Fault::new(Some("update"), Some("leases"), FaultKind::Delay(Duration::from_secs(30)), 1000));

    tokio::time::timeout(TIMING.lease_duration * 2, lost.wait()).await.expect("the holder gives up while its renewal hangs");
    let given_up = jiff::Timestamp::now();
    // The last renewal the API server stored: a standby counts the lease from (at least) then.
    let renewed = lease_object(&h).await.unwrap().spec.unwrap().renew_time.unwrap().0;
    let expires = renewed + TIMING.lease_duration;
    assert!(given_up < expires, "gave up at {given_up}, after the lease renewed at {renewed} expired");
}

#[tokio::test]
async fn throttled_or_unavailable_renewals_are_not_retried_by_the_client() {
    let (h, a, _b) = replicas().await;
    let Some(api) = fault_controls(&h, "throttled_or_unavailable_renewals_are_not_retried_by_the_client") else { return };
    assert!(a.acquire(Shutdown::default()).await);
    for code in [429, 503, 504] {
        let before = api.counts();
        api.inject(Fault::new(Some("update"), Some("leases"), FaultKind::Status(code), 1));
        let result = a.renew().await;
        assert!(result.is_err(), "HTTP {code}: {result:?}");
        let updates = api.counts().delta(&before).get("update", "leases");
        assert_eq!(updates, 1, "HTTP {code}: the renewal was retried by the client");
    }
    // The renewal loop itself retries soon after such a failure, within the lease.
    let lost = a.keep(Shutdown::default());
    tokio::time::sleep(TIMING.renew_interval / 2).await;
    api.inject(Fault::new(Some("update"), Some("leases"), FaultKind::Status(429), 1));
    tokio::time::sleep(TIMING.lease_duration).await;
    assert!(!lost.is_triggered(), "one throttled renewal must not cost the leadership");
    assert_eq!(holder(&h).await.as_deref(), Some("replica-a"));
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[tokio::test]
async fn losing_leadership_drops_the_work_in_flight_at_once() {
    let (h, a, _b) = replicas().await;
    let Some(api) = fault_controls(&h, "losing_leadership_drops_the_work_in_flight_at_once") else { return };
    assert!(a.acquire(Shutdown::default()).await);
    // Work like a reconcile: a slow API request, then a write that must not happen any more.
    api.inject(Fault::new(Some("get"), Some("secrets"), FaultKind::Delay(Duration::from_secs(30)), 1));
    let (client, ns) = (h.client.clone(), h.ns.clone());
    let (dropped, finished) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let work = {
        let (guard, finished) = (DropFlag(dropped.clone()), finished.clone());
        async move {
            let _guard = guard;
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, &ns);
            let _ = secrets.get_opt("slow").await;
            finished.store(true, Ordering::Release);
        }
    };
    let leading = tokio::spawn({
        let a = a.clone();
        async move { a.lead(work).await }
    });
    while api.counts().get("get", "secrets") == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    steal(&h, Some("replica-c")).await;
    let stolen = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), leading).await.expect("lead returns while the work hangs").unwrap();
    assert_eq!(outcome, Outcome::LostLeadership);
    assert!(stolen.elapsed() < TIMING.renew_interval + Duration::from_secs(1), "took {:?}", stolen.elapsed());
    assert!(dropped.load(Ordering::Acquire), "the work was dropped");
    assert!(!finished.load(Ordering::Acquire));
    assert_eq!(holder(&h).await.as_deref(), Some("replica-c"), "a lost Lease is not released");
}

#[tokio::test]
async fn finished_work_releases_the_lease() {
    let (h, a, _b) = replicas().await;
    assert!(a.acquire(Shutdown::default()).await);
    let outcome = a.lead(tokio::time::sleep(TIMING.renew_interval * 3)).await;
    assert_eq!(outcome, Outcome::Finished);
    assert_eq!(holder(&h).await, None);
}

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");

/// Starts `run --leader-elect` as `identity` for the harness's namespace (the Lease in it too).
fn operator(h: &Harness, kubeconfig: &std::path::Path, identity: &str) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["run", "--leader-elect", "--admin-addr", "127.0.0.1:0", "--namespaces", &h.ns])
        .args(["--lease-namespace", &h.ns, "--identity", identity, "--allowed-endpoint-hosts", "127.0.0.1"])
        .args(["--token-timeout", "60s", "--log-format", "json"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(20);

/// The exit code and log of `child` once it exits; if it does not within `limit`, it is killed
/// and the test fails showing its log.
async fn exit_within(mut child: tokio::process::Child, limit: Duration, what: &str) -> (Option<i32>, String) {
    use tokio::io::AsyncReadExt as _;
    let mut stdout = child.stdout.take().unwrap();
    let log = tokio::spawn(async move {
        let mut log = Vec::new();
        let _ = stdout.read_to_end(&mut log).await;
        String::from_utf8_lossy(&log).into_owned()
    });
    let exited = tokio::time::timeout(limit, child.wait()).await;
    if exited.is_err() {
        let _ = child.kill().await;
    }
    let log = log.await.unwrap();
    let status = exited.unwrap_or_else(|_| panic!("{what} did not exit within {limit:?}; its log:\n{log}")).unwrap();
    (status.code(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_at_once_on_lost_leadership_and_zero_on_sigterm() {
    let h = Harness::new(Duration::from_secs(3600)).await;
    h.tokens.set_default(Some(Scripted::Hang));
    h.create_token("slow", json!({})).await;
    let kubeconfig = h.kubeconfig_file(&std::env::temp_dir());

    // A leads and has a token request in flight (the endpoint hangs) when another replica takes
    // the Lease: A exits non-zero within a renew interval, without waiting for the request.
    let a = operator(&h, &kubeconfig, "op-a");
    h.wait_until("op-a holds the Lease and requests a token", WAIT, || async {
        holder(&h).await.as_deref() == Some("op-a") && h.tokens.request_count() >= 1
    })
    .await;
    steal(&h, Some("replica-c")).await;
    let stolen = Instant::now();
    let (code, log) = exit_within(a, Duration::from_secs(10), "op-a, despite the hung token request").await;
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("leadership lost"), "{log}");
    assert!(stolen.elapsed() < Duration::from_secs(8), "took {:?}", stolen.elapsed());

    // B takes the freed Lease and, on SIGTERM, stops gracefully, releases it and exits 0.
    h.tokens.set_default(None);
    steal(&h, None).await;
    let b = operator(&h, &kubeconfig, "op-b");
    h.wait_until("op-b holds the Lease and issued a token", WAIT, || async {
        holder(&h).await.as_deref() == Some("op-b") && !h.tokens.issued().is_empty()
    })
    .await;
    let pid = b.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let (code, log) = exit_within(b, Duration::from_secs(10), "op-b, on SIGTERM").await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(holder(&h).await, None, "released on a normal stop");
    if h.api.is_some() {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_pending_when_leadership_is_lost_is_stored_before_the_lease_expires() {
    use tokio::io::AsyncBufReadExt;
    const SEED: &str = "seed-refresh-token-Hx7Kp2Lm9Qw4Rt6Yz8Ab";
    let h = Harness::new(Duration::from_secs(3600)).await;
    let Some(api) = fault_controls(&h, "a_rotated_refresh_token_pending_when_leadership_is_lost_is_stored_before_the_lease_expires") else {
        return;
    };
    let tokens = &h.tokens;
    tokens.add_refresh_token(SEED);
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": h.ns, "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED},
    }));
    api.insert(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
        "metadata": {"name": "chain", "namespace": h.ns},
        "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds", "refreshTokenKey": "refresh_token"},
                 "endpoint": {"type": "CSP", "url": tokens.base_url()}},
    }));
    let kubeconfig = h.kubeconfig_file(&std::env::temp_dir());

    // Secret writes fail: CSP rotates the seed, and the new refresh token stays in memory.
    api.forbid("patch", "secrets");
    let mut a = operator(&h, &kubeconfig, "op-a");
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let mut lines = tokio::io::BufReader::new(a.stdout.take().unwrap()).lines();
    let reader = tokio::spawn({
        let log = log.clone();
        async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    h.wait_until("op-a rotates the seed and fails to store the new refresh token", WAIT, || async {
        tokens.valid_refresh_tokens().first().is_some_and(|t| t != SEED) && api.counts().get("patch", "secrets") >= 1
    })
    .await;
    let rotated = tokens.valid_refresh_tokens()[0].clone();

    // Another replica takes the Lease: op-a drops its work at once, the pending token with it
    // unless it is written while op-a's lease still lasts. The API server recovers meanwhile.
    steal(&h, Some("replica-c")).await;
    h.wait_until("op-a notices the lost Lease", WAIT, || async { log.lock().unwrap().contains("leadership lost") }).await;
    api.allow("patch", "secrets");
    let status = tokio::time::timeout(Duration::from_secs(20), a.wait()).await.expect("op-a exits").unwrap();
    let _ = reader.await;
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    let store = api.get("v1", "secrets", Some(&h.ns), "chain-refresh-token").unwrap_or_else(|| panic!("the store was not written: {log}"));
    let store: k8s_openapi::api::core::v1::Secret = serde_json::from_value(store).unwrap();
    let stored = String::from_utf8(store.data.unwrap()["refresh_token"].0.clone()).unwrap();
    assert_eq!(stored, rotated, "the newest refresh token of the chain is kept for the next leader");
    assert!(log.contains("stored the rotated refresh token"), "{log}");
    let _ = std::fs::remove_file(&kubeconfig);
}
