//! What the operator remembers about a NavigatorToken, and when: rotation follows credential
//! values (not Secret metadata), a deleted object leaves nothing behind, and a lagging watch
//! never leads to a second token for one window.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{CREDS, Harness};
use testkit::apiserver::{Fault, FaultKind};
use testkit::token_server::Scripted;

const EXPIRY: &str = "navigator_token_expiry_timestamp_seconds";
/// Long enough that no refresh falls inside a test.
const LONG: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_edits_of_the_credentials_secret_cost_no_token_and_value_changes_do() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("first", json!({})).await;
    h.create_token("second", json!({"target": {"secretName": "second-token"}})).await;
    h.wait_until("both issued", Duration::from_secs(20), || async {
        h.secret_token("first", "token").await.is_some() && h.secret_token("second-token", "token").await.is_some()
    })
    .await;
    assert_eq!(h.tokens.request_count(), 2);

    // What GitOps tools and people do to a Secret without touching its values.
    let metadata = json!({"metadata": {
        "annotations": {"argocd.argoproj.io/tracking-id": "app:/Secret:team-a/partner-oauth-client"},
        "labels": {"team": "platform"},
    }});
    h.secrets().patch(CREDS, &PatchParams::default(), &Patch::Merge(&metadata)).await.unwrap();
    let relabel = json!({"metadata": {"labels": {"team": "payments"}}});
    h.secrets().patch(CREDS, &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.tokens.request_count(), 2, "metadata-only edits must not re-issue tokens");

    // A rotated client secret is a new input: both tokens are re-issued.
    h.tokens.set_credentials("testkit-client", "rotated-secret");
    h.put_credentials("testkit-client", "rotated-secret").await;
    h.wait_until("both re-issued", Duration::from_secs(20), || async { h.tokens.request_count() == 4 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.tokens.request_count(), 4);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_navigator_token_takes_its_metric_series_with_it() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("gone", json!({})).await;
    h.create_token("kept", json!({"target": {"secretName": "kept-token"}})).await;
    h.wait_until("both expiry series", Duration::from_secs(20), || async {
        h.series(EXPIRY, "gone").is_some() && h.series(EXPIRY, "kept").is_some()
    })
    .await;

    h.delete_token("gone").await;
    h.wait_until("the deleted token's series is gone", Duration::from_secs(10), || async { h.series(EXPIRY, "gone").is_none() }).await;
    assert!(h.series(EXPIRY, "kept").is_some(), "other tokens keep theirs");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_false_when_the_token_expires_during_a_long_retry_after() {
    let mut h = Harness::new(Duration::from_secs(6)).await;
    h.start_operator();
    h.create_token("waiting", json!({})).await;
    h.wait_for_token_in_secret("waiting", 1).await;
    // Status follows the Secret write (at once on the test API server, soon on a real one).
    h.wait_for_ready("waiting", "True", "TokenValid").await;
    let expires_at: jiff::Timestamp = h.token("waiting").await.status.unwrap().expires_at.unwrap().parse().unwrap();
    // Every refresh is told to come back in a minute: long after this token expires.
    h.tokens.set_default(Some(Scripted::Status {
        code: 429,
        body: r#"{"cspErrorCode":"rate_limited","message":"slow down","requestId":"rq-1"}"#.into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), "60".into())],
    }));
    h.wait_until("the refresh fails", Duration::from_secs(10), || async {
        h.ready("waiting").await.is_some_and(|(_, reason)| reason == "RefreshFailing")
    })
    .await;
    h.wait_until("Ready=False once the token has expired", Duration::from_secs(10), || async {
        h.ready("waiting").await.is_some_and(|(status, _)| status == "False")
    })
    .await;
    assert!(jiff::Timestamp::now() >= expires_at, "Ready turned False before the token expired");
    let status = h.token("waiting").await.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "RateLimited");
    assert!(ready.message.contains("expired at"), "{}", ready.message);
    assert_eq!(status.expires_at, None, "status no longer describes an expired token as current");
    assert_eq!(h.tokens.request_count(), 2, "the Retry-After is still honoured");
    // The Event follows the status write.
    h.wait_until("a TokenExpired Event", Duration::from_secs(10), || async {
        h.events("waiting").await.contains(&("Warning".to_owned(), "TokenExpired".to_owned()))
    })
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_corrected_allow_list_retries_blocked_tokens_at_once() {
    let mut h = Harness::new(LONG).await;
    h.start_operator_allowing(&["console.cloud.vmware.com"]);
    h.create_token("blocked", json!({})).await;
    h.wait_for_ready("blocked", "False", "EndpointNotAllowed").await;
    h.stop_operator().await;

    // The admin adds the host and restarts the operator: no waiting for the 10-minute retry.
    h.start_operator_allowing(&["console.cloud.vmware.com", "127.0.0.1"]);
    h.wait_for_token_in_secret("blocked", 1).await;
    // Status follows the Secret write (at once on the test API server, soon on a real one).
    h.wait_for_ready("blocked", "True", "TokenValid").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_exports_the_failure_series_of_failing_tokens_at_once() {
    let mut h = Harness::new(LONG).await;
    h.tokens.set_credentials("testkit-client", "not-what-the-secret-holds");
    h.start_operator();
    h.create_token("failing", json!({"endpoint": {"type": "Navigator"}})).await;
    h.wait_for_ready("failing", "False", "Unauthorized").await;
    h.stop_operator().await;

    h.start_operator();
    h.wait_until("the failure series after the restart", Duration::from_secs(5), || async {
        h.series("navigator_token_consecutive_failures", "failing").is_some_and(|line| line.ends_with(" 1"))
    })
    .await;
    assert_eq!(h.tokens.request_count(), 1, "the series comes from status, not from a new attempt");
    h.finish().await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_lags_behind_the_writes_never_costs_a_second_token() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.start_operator();
    h.wait_synced().await;
    // Longer than the operator's 5 s read-your-writes wait, for the Secret only: the status
    // write that follows shows at once and triggers a reconcile that would see no Secret.
    api.set_watch_lag("secrets", Some(Duration::from_secs(8)));
    h.create_token("lagging", json!({})).await;
    h.wait_for_token_in_secret("lagging", 1).await;
    // Reconciles triggered meanwhile (by the status write) see a cache without the Secret
    // written: they must wait, not issue again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(h.tokens.request_count(), 1, "one token for one window, however far the watch lags");
    api.set_watch_lag("secrets", None);
    h.wait_until("Ready", Duration::from_secs(20), || async { h.ready("lagging").await.is_some_and(|(s, _)| s == "True") }).await;
    assert_eq!(h.tokens.request_count(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_does_not_wait_for_watches_that_have_ended() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.start_operator();
    h.wait_synced().await;
    // The reconcile waits (up to 5 s) for the watch to show the Secret it wrote when the stop
    // comes: the watches end with the stop, so the wait can only run out; the stop must not
    // wait for that (a SIGTERM'd replica would hold its Lease meanwhile).
    api.set_watch_lag("secrets", Some(Duration::from_secs(8)));
    h.create_token("stopping", json!({})).await;
    h.wait_for_token_in_secret("stopping", 1).await;
    let stop = std::time::Instant::now();
    h.stop_operator().await;
    assert!(stop.elapsed() < Duration::from_secs(4), "the stop took {:?}", stop.elapsed());
    api.set_watch_lag("secrets", None);
    assert_eq!(h.tokens.request_count(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_caches_could_list_is_prompt() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    // Secrets may not be listed (an RBAC mistake): reconciles wait for caches that never list,
    // and a stop must not wait for them.
    api.forbid("list", "secrets");
    h.create_token("unlisted", json!({})).await;
    h.start_operator();
    while api.counts().get("list", "navigatortokens") == 0 || api.counts().get("list", "secrets") == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The NavigatorToken cache has listed: its reconcile starts and waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = std::time::Instant::now();
    h.stop_operator().await;
    assert!(stop.elapsed() < Duration::from_secs(4), "the stop took {:?}", stop.elapsed());
    api.allow_all();
    assert_eq!(h.tokens.request_count(), 0);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_before_the_lagging_watch_showed_it_is_written_again() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.start_operator();
    h.wait_synced().await;
    // The cache has not shown the Secret written when it is deleted: the write it waits for
    // never appears, and only the deletion says that the cache has moved past it.
    api.set_watch_lag("secrets", Some(Duration::from_secs(8)));
    h.create_token("gone", json!({})).await;
    h.wait_for_token_in_secret("gone", 1).await;
    h.secrets().delete("gone", &Default::default()).await.unwrap();
    api.set_watch_lag("secrets", None);
    h.wait_for_token_in_secret("gone", 2).await;
    h.wait_until("Ready", Duration::from_secs(20), || async { h.ready("gone").await.is_some_and(|(s, _)| s == "True") }).await;
    assert_eq!(h.tokens.request_count(), 2, "one new token for the deleted Secret");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deleted_before_its_writer_heard_the_answer_is_written_again() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.start_operator();
    h.wait_synced().await;
    // The Secret is written, seen by the watch and deleted, all before the operator hears the
    // write's answer: the cache never shows the version written, and the deletion came before
    // the operator knew which version to wait for.
    api.inject(Fault::new(Some("patch"), Some("secrets"), FaultKind::DelayAnswer(Duration::from_secs(2)), 1));
    h.create_token("unheard", json!({})).await;
    h.wait_for_token_in_secret("unheard", 1).await;
    h.secrets().delete("unheard", &Default::default()).await.unwrap();
    h.wait_for_token_in_secret("unheard", 2).await;
    h.wait_until("Ready", Duration::from_secs(20), || async { h.ready("unheard").await.is_some_and(|(s, _)| s == "True") }).await;
    assert_eq!(h.tokens.request_count(), 2, "one new token for the deleted Secret");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_lists_come_in_pages_as_a_real_api_server_serves_them() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    // Suspended: listing them is the point, not issuing 250 tokens.
    for i in 0..250 {
        api.insert(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": format!("t{i}"), "namespace": h.ns},
            "spec": {"orgId": support::ORG, "credentialsSecretRef": {"name": CREDS}, "suspend": true},
        }));
    }
    h.start_operator();
    h.wait_synced().await;
    // A real server ignores `limit` for resourceVersion=0 lists (served from its watch cache):
    // only a list from etcd is paged, and the operator's peak memory at 10,000 depends on it.
    let lists = h.api_counts().get("list", "navigatortokens");
    assert!(lists >= 3, "250 NavigatorTokens listed in {lists} page(s), not pages of 100");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_secret_from_the_first_reconcile_even_without_a_token() {
    let mut h = Harness::new(LONG).await;
    h.start_operator_allowing(&["console.cloud.vmware.com"]);
    h.create_token("blocked", json!({"target": {"secretName": "blocked-token"}})).await;
    h.wait_for_ready("blocked", "False", "EndpointNotAllowed").await;
    // `kubectl get nvt` shows the SECRET column from status: known before any token exists.
    let status = h.token("blocked").await.status.unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("blocked-token"));
    assert_eq!(status.issued_at, None);
    assert!(h.secrets().get_opt("blocked-token").await.unwrap().is_none());
    h.finish().await;
}
