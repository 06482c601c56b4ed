//! Writes of the target Secret that the API server refuses, as a genuine kube-apiserver does:
//! quota, immutable Secrets, invalid labels, RBAC. Each is reported with a reason a person can
//! act on, backs off, costs no second token request, and stores the token once fixed.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use support::Harness;
use testkit::apiserver::{Fault, FaultKind};

/// Long enough that no refresh falls inside a test.
const LONG: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(20);

async fn last_failure(h: &Harness, name: &str) -> (String, String, u32) {
    let status = h.token(name).await.status.expect("status");
    let failure = status.last_failure.expect("a last failure");
    (failure.reason, failure.message, status.consecutive_failures)
}

async fn warnings(h: &Harness, name: &str, reason: &str) -> usize {
    h.events(name).await.iter().filter(|(kind, r)| kind == "Warning" && r == reason).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_that_leaves_no_room_is_reported_and_the_issued_token_stored_once_raised() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    // The credentials Secret already uses the one Secret the quota allows.
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "secrets", "namespace": h.ns},
        "spec": {"hard": {"count/secrets": "1"}}});
    api.insert(quota.clone());
    h.start_operator();
    h.create_token("quota", json!({})).await;
    h.wait_for_ready("quota", "False", "SecretQuotaExceeded").await;
    let (_, message, _) = last_failure(&h, "quota").await;
    assert!(message.contains("ResourceQuota") && message.contains("Raise the quota"), "{message}");

    // Backing off exponentially (2s, 4s, …), reusing the token issued: never a second request.
    h.wait_until("a second failed attempt", WAIT, || async { last_failure(&h, "quota").await.2 >= 2 }).await;
    assert_eq!(h.tokens.request_count(), 1, "the token issued is kept while the write fails");
    assert_eq!(warnings(&h, "quota", "SecretQuotaExceeded").await, 1, "one Warning Event per episode");

    let mut raised = quota;
    raised["spec"]["hard"]["count/secrets"] = json!("5");
    api.insert(raised);
    h.wait_for_token_in_secret("quota", 1).await;
    h.wait_for_ready("quota", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1, "the token issued before is the one stored");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_target_secret_keeps_the_old_token_until_deleted_then_takes_the_new_one() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("frozen", json!({})).await;
    h.wait_for_token_in_secret("frozen", 1).await;
    h.wait_for_ready("frozen", "True", "TokenValid").await;
    let first = h.secret_token("frozen", "token").await.unwrap();

    h.secrets().patch("frozen", &PatchParams::default(), &Patch::Merge(&json!({"immutable": true}))).await.unwrap();
    h.patch_token("frozen", json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "now"}}})).await;
    // The old token is still valid: Ready stays True while the refresh fails.
    h.wait_for_ready("frozen", "True", "RefreshFailing").await;
    let (reason, message, _) = last_failure(&h, "frozen").await;
    assert_eq!(reason, "SecretImmutable");
    assert!(message.contains("Delete it and the operator recreates it"), "{message}");
    assert_eq!(h.secret_token("frozen", "token").await.as_deref(), Some(first.as_str()), "the old token stays");
    // The Warning Event is created after the status write that the wait above saw.
    h.wait_until("the Warning Event", WAIT, || async { warnings(&h, "frozen", "SecretImmutable").await >= 1 }).await;
    h.wait_until("a retry", WAIT, || async { last_failure(&h, "frozen").await.2 >= 2 }).await;
    assert_eq!(warnings(&h, "frozen", "SecretImmutable").await, 1, "one Warning Event per episode");
    assert_eq!(h.tokens.request_count(), 2, "the forced refresh's token is requested once and kept");

    // As the message says: delete it, and the token already issued lands at once.
    h.secrets().delete("frozen", &DeleteParams::default()).await.unwrap();
    h.wait_for_token_in_secret("frozen", 2).await;
    h.wait_for_ready("frozen", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 2, "no token is requested twice for one window");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_target_labels_are_reported_and_a_fixed_spec_retries_at_once() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("labels", json!({"target": {"labels": {"bad key!": "x"}}})).await;
    h.wait_for_ready("labels", "False", "SecretInvalid").await;
    let (_, message, _) = last_failure(&h, "labels").await;
    assert!(message.contains("bad key!") && message.contains("spec.target"), "{message}");

    // A spec change is a new generation: no waiting for the backoff.
    h.patch_token("labels", json!({"spec": {"target": {"labels": {"bad key!": null, "team": "a"}}}})).await;
    h.wait_for_token_in_secret("labels", 1).await;
    h.wait_for_ready("labels", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1, "labels are not an input of the token: the issued one is stored");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_secret_write_backs_off_exponentially_with_one_event() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.start_operator();
    h.create_token("denied", json!({})).await;
    h.wait_for_token_in_secret("denied", 1).await;
    h.wait_for_ready("denied", "True", "TokenValid").await;

    api.inject(Fault::new(Some("patch"), Some("secrets"), FaultKind::Status(403), 1_000));
    let before = h.api_counts();
    h.patch_token("denied", json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "now"}}})).await;
    h.wait_for_ready("denied", "True", "RefreshFailing").await;
    assert_eq!(last_failure(&h, "denied").await.0, "SecretWriteForbidden");
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Attempts near 0s, 2s and 6s (±20 %), not one every 5 s, and not a storm.
    let attempts = h.api_counts().since(&before).get("patch", "secrets");
    assert!((2..=4).contains(&attempts), "{attempts} Secret writes in 7s");
    assert_eq!(warnings(&h, "denied", "SecretWriteForbidden").await, 1, "one Warning Event per episode");
    assert_eq!(h.tokens.request_count(), 2);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_before_the_secret_ever_existed_backs_off_instead_of_looping() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    api.inject(Fault::new(Some("patch"), Some("secrets"), FaultKind::Status(403), 1_000));
    h.start_operator();
    h.create_token("never-written", json!({})).await;
    h.wait_for_ready("never-written", "False", "SecretWriteForbidden").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The backoff (2 s, 4 s, ...), not a retry per status write: an absent Secret was never
    // "deleted to clear it". Before this was fixed, 4 s saw some 600 writes.
    let attempts = h.api_counts().get("patch", "secrets");
    assert!((1..=4).contains(&attempts), "{attempts} Secret writes in ~4s");
    assert_eq!(h.tokens.request_count(), 1, "the issued token is kept for the retry");
    h.finish().await;
}
