//! The credential kinds besides OAuth client credentials, end to end: CSP API tokens (issue,
//! refresh, rotation, revocation, their own expiry) and the refresh-token grant (the chain of
//! rotated refresh tokens across a restart, a new seed, a spent one).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::{CREDS, Harness};
use testkit::token_server::{API_TOKEN_DETAILS_PATH, Scripted, csp_error};

const API_TOKEN: &str = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9BqW2eR4tY6uI8oP0";
const ROTATED_API_TOKEN: &str = "Pp3oI9uY7tR5eW1qA2sD4fG6hJ8kL0zXcVbNm1QwE3rT5y";
const SEED: &str = "seed-refresh-token-Hx7Kp2Lm9Qw4Rt6Yz8Ab";
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Long enough that no refresh falls inside a test.
const LONG: Duration = Duration::from_secs(600);

/// Replaces the credentials Secret's data with `data` (labelled, as the operator requires).
async fn put_credentials(h: &Harness, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CREDS, "labels": {"navigator.dev/credentials": "true"}},
        "stringData": data,
    }))
    .unwrap();
    h.secrets().patch(CREDS, &PatchParams::apply("scenario-test").force(), &Patch::Apply(&secret)).await.expect("apply credentials");
}

fn api_token_spec() -> Value {
    json!({"credentialsSecretRef": {"apiTokenKey": "api_token"}})
}

fn refresh_token_spec() -> Value {
    json!({"credentialsSecretRef": {"refreshTokenKey": "refresh_token"}})
}

/// The data of a Secret as text.
async fn secret_data(h: &Harness, name: &str) -> Option<BTreeMap<String, String>> {
    let secret = h.secrets().get_opt(name).await.unwrap()?;
    Some(secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8(v.0).unwrap())).collect())
}

fn details_calls(h: &Harness) -> usize {
    h.tokens.requests().iter().filter(|r| r.path == API_TOKEN_DETAILS_PATH).count()
}

/// The one refresh token the stand-in accepts now (the newest of the chain).
fn current(h: &Harness) -> String {
    h.tokens.valid_refresh_tokens()[0].clone()
}

fn issued(h: &Harness) -> usize {
    h.tokens.issued().len()
}

/// A condition of a NavigatorToken as (status, reason, message).
async fn condition(h: &Harness, name: &str, type_: &str) -> Option<(String, String, String)> {
    let status = h.token(name).await.status?;
    status.conditions.into_iter().find(|c| c.type_ == type_).map(|c| (c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_is_exchanged_refreshed_and_its_own_expiry_reported_once() {
    let mut h = Harness::new(Duration::from_secs(6)).await;
    let expires = SystemTime::now() + 20 * DAY;
    h.tokens.add_api_token(API_TOKEN, Some(expires));
    put_credentials(&h, json!({"api_token": API_TOKEN})).await;
    h.start_operator();
    h.create_token("api", api_token_spec()).await;
    h.wait_for_token_in_secret("api", 1).await;
    h.wait_for_ready("api", "True", "TokenValid").await;

    let authorize = &h.tokens.requests()[0];
    assert_eq!(authorize.form_param("api_token"), Some(API_TOKEN));
    assert_eq!(authorize.header("authorization"), None);
    // The refresh uses the API token again.
    h.wait_for_token_in_secret("api", 2).await;

    let status = h.token("api").await.status.unwrap();
    let credentials = status.credentials.expect("status.credentials");
    let reported: jiff::Timestamp = credentials.api_token_expires_at.expect("apiTokenExpiresAt").parse().unwrap();
    let expected = jiff::Timestamp::try_from(expires).unwrap();
    assert!((reported.as_second() - expected.as_second()).abs() <= 1, "{reported} vs {expected}");
    let (state, reason, message) = condition(&h, "api", "CredentialsExpiring").await.expect("CredentialsExpiring");
    assert_eq!((state.as_str(), reason.as_str()), ("True", "APITokenExpiringSoon"));
    assert!(message.contains(CREDS) && message.contains("expires at"), "{message}");
    assert!(h.has_event("api", "Warning", "APITokenExpiringSoon").await);
    let series = h.series("navigator_token_api_token_expiry_timestamp_seconds", "api").expect("expiry series");
    assert!(series.ends_with(&format!(" {}", reported.as_second())), "{series}");

    // Asked once per credentials change (and then daily), not at every refresh; warned once.
    h.wait_for_token_in_secret("api", 3).await;
    assert_eq!(details_calls(&h), 1);
    let warnings = h.events("api").await.into_iter().filter(|(_, r)| r == "APITokenExpiringSoon").count();
    assert_eq!(warnings, 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_api_token_issues_at_once_and_metadata_edits_do_not() {
    let mut h = Harness::new(LONG).await;
    h.tokens.add_api_token(API_TOKEN, Some(SystemTime::now() + 180 * DAY));
    h.tokens.add_api_token(ROTATED_API_TOKEN, None);
    put_credentials(&h, json!({"api_token": API_TOKEN})).await;
    h.start_operator();
    h.create_token("api", api_token_spec()).await;
    h.wait_for_token_in_secret("api", 1).await;
    h.wait_until("the expiry is known", Duration::from_secs(10), || async {
        condition(&h, "api", "CredentialsExpiring").await.is_some_and(|(s, r, _)| s == "False" && r == "APITokenValid")
    })
    .await;

    let relabel = json!({"metadata": {"labels": {"team": "payments"}, "annotations": {"rotated-by": "vault"}}});
    h.secrets().patch(CREDS, &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(issued(&h), 1, "metadata-only edits must not re-issue");

    put_credentials(&h, json!({"api_token": ROTATED_API_TOKEN})).await;
    h.wait_for_token_in_secret("api", 2).await;
    let last_authorize = h.tokens.requests().into_iter().rfind(|r| r.form_param("api_token").is_some()).unwrap();
    assert_eq!(last_authorize.form_param("api_token"), Some(ROTATED_API_TOKEN));
    // The new API token is asked about at once: it never expires.
    h.wait_until("the new token's expiry", Duration::from_secs(10), || async {
        condition(&h, "api", "CredentialsExpiring").await.is_some_and(|(_, r, _)| r == "APITokenNeverExpires")
    })
    .await;
    assert_eq!(details_calls(&h), 2);
    let credentials = h.token("api").await.status.unwrap().credentials.unwrap();
    assert!(credentials.api_token_never_expires && credentials.api_token_expires_at.is_none(), "{credentials:?}");
    // The series follow the operator's cache, which may show the status a moment after the API does.
    h.wait_until("no series for a token that never expires", Duration::from_secs(10), || async {
        h.series("navigator_token_api_token_expiry_timestamp_seconds", "api").is_none()
    })
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_token_waits_for_new_credentials_and_the_valid_token_stays() {
    let mut h = Harness::new(Duration::from_secs(8)).await;
    h.tokens.add_api_token(API_TOKEN, None);
    put_credentials(&h, json!({"api_token": API_TOKEN})).await;
    h.start_operator();
    h.create_token("api", api_token_spec()).await;
    h.wait_for_token_in_secret("api", 1).await;
    let first = h.secret_token("api", "token").await.unwrap();

    h.tokens.revoke_api_token(API_TOKEN);
    h.wait_for_ready("api", "False", "APITokenInvalid").await;
    assert_eq!(h.secret_token("api", "token").await.as_deref(), Some(first.as_str()), "the valid token stays in its Secret");
    let status = h.token("api").await.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("not retried until the credentials change"), "{}", ready.message);
    assert!(ready.message.contains("stays in the Secret until it expires"), "{}", ready.message);
    assert_eq!(status.next_refresh_at, None, "no retry is scheduled");
    assert!(h.has_event("api", "Warning", "APITokenInvalid").await);

    // Not retried by time, not even once the kept token has expired (8 s lifetime).
    let attempts = h.tokens.request_count();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(h.tokens.request_count(), attempts, "an invalid API token is not retried until the credentials change");

    h.tokens.add_api_token(ROTATED_API_TOKEN, None);
    put_credentials(&h, json!({"api_token": ROTATED_API_TOKEN})).await;
    h.wait_for_token_in_secret("api", 2).await;
    h.wait_for_ready("api", "True", "TokenValid").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_details_call_never_blocks_the_access_token() {
    let mut h = Harness::new(LONG).await;
    h.tokens.add_api_token(API_TOKEN, Some(SystemTime::now() + 90 * DAY));
    put_credentials(&h, json!({"api_token": API_TOKEN})).await;
    // The authorize call is answered normally, the details call after it fails.
    h.tokens.push_response(Scripted::Delay(Duration::ZERO));
    h.tokens.push_response(csp_error(503, "unavailable", "details are down", "rq-1"));
    h.start_operator();
    h.create_token("api", api_token_spec()).await;
    h.wait_for_token_in_secret("api", 1).await;
    h.wait_for_ready("api", "True", "TokenValid").await;
    let status = h.token("api").await.status.unwrap();
    assert_eq!(status.credentials.as_ref().and_then(|c| c.api_token_expires_at.clone()), None);
    assert_eq!(details_calls(&h), 1, "asked once; the next try is a day later");
    assert!(status.conditions.iter().all(|c| c.type_ != "CredentialsExpiring"), "an unknown expiry sets no condition");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_token_chain_continues_across_a_restart_and_never_goes_back() {
    let mut h = Harness::new(Duration::from_secs(6)).await;
    h.tokens.add_refresh_token(SEED);
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    let credentials_version = h.secrets().get(CREDS).await.unwrap().metadata.resource_version;
    h.start_operator();
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_for_token_in_secret("chain", 1).await;

    let first = &h.tokens.requests()[0];
    assert_eq!(first.form_param("grant_type"), Some("refresh_token"));
    assert_eq!(first.form_param("refresh_token"), Some(SEED));
    assert!(first.basic_credentials().is_some());
    // The rotated refresh token is in the operator's own Secret, the seed is spent.
    assert_ne!(current(&h), SEED);
    let stored = secret_data(&h, "chain-refresh-token").await.expect("the refresh-token Secret");
    assert_eq!(stored.get("refresh_token"), Some(&current(&h)));
    let store = h.secrets().get("chain-refresh-token").await.unwrap();
    assert_eq!(store.metadata.owner_references, None, "not garbage-collected with the NavigatorToken");
    assert_eq!(store.metadata.labels.unwrap()["app.kubernetes.io/managed-by"], "navigator-token-operator");

    // The refresh uses the newest token of the chain, at the cost of one GET and one write more
    // than client credentials: the refresh-token Secret is read, then written before the token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = h.api_counts();
    h.wait_for_token_in_secret("chain", 2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let delta = h.api_counts().since(&before);
    assert_eq!(
        (delta.get("get", "secrets"), delta.get("patch", "secrets"), delta.get("patch", "navigatortokens/status")),
        (1, 2, 1),
        "{delta:?}"
    );
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&current(&h)));
    h.wait_until("status after the refresh", Duration::from_secs(10), || async {
        h.ready("chain").await == Some(("True".to_owned(), "TokenValid".to_owned()))
    })
    .await;

    // A new process (a restart, or another replica taking the lease) continues the chain.
    h.stop_operator().await;
    h.start_operator();
    h.patch_token("chain", json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "now"}}})).await;
    h.wait_for_token_in_secret("chain", 3).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    let rejected = h.tokens.requests().iter().filter(|r| r.form_param("grant_type") == Some("refresh_token")).count() - issued(&h);
    assert_eq!(rejected, 0, "no request ever sent a spent refresh token");
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&current(&h)));
    // The user's Secret was only read.
    let credentials = h.secrets().get(CREDS).await.unwrap();
    assert_eq!(credentials.metadata.resource_version, credentials_version, "the credentials Secret is never written");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_refresh_token_needs_a_person_and_a_pasted_one_starts_a_new_chain() {
    let mut h = Harness::new(LONG).await;
    // The seed was never issued (or is long spent).
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    h.start_operator();
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_for_ready("chain", "False", "RefreshTokenInvalid").await;
    assert!(h.has_event("chain", "Warning", "RefreshTokenInvalid").await);
    let message = condition(&h, "chain", "Ready").await.unwrap().2;
    assert!(!message.contains(&SEED[..10]), "the quoted token start is scrubbed: {message}");
    let attempts = h.tokens.request_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.tokens.request_count(), attempts);

    // A person pastes a good refresh token: tried at once, and it starts a new chain.
    let pasted = "pasted-refresh-token-Tq5Wm8Zx2Cv4Bn6";
    h.tokens.add_refresh_token(pasted);
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": pasted})).await;
    h.wait_for_token_in_secret("chain", 1).await;
    let last = h.tokens.requests().last().cloned().unwrap();
    assert_eq!(last.form_param("refresh_token"), Some(pasted));
    let store = h.secrets().get("chain-refresh-token").await.unwrap();
    let annotations = store.metadata.annotations.unwrap();
    assert_eq!(annotations["navigator.dev/refresh-token-for"], "chain");
    assert!(annotations.contains_key("navigator.dev/seed-sha256"));

    // Another paste wins over the stored chain, even though the chain is newer.
    let second = "second-pasted-token-Lk8Jh6Gf4Ds2Aq0";
    h.tokens.add_refresh_token(second);
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": second})).await;
    h.wait_for_token_in_secret("chain", 2).await;
    assert_eq!(h.tokens.requests().last().unwrap().form_param("refresh_token"), Some(second));
    h.finish().await;
}

/// A NavigatorToken "chain" whose first refresh-token grant rotated the seed while every
/// Secret write is refused (until the caller allows them): after the reconcile's own tries the
/// rotated token waits in memory for the retry.
async fn rotate_with_secret_writes_refused(h: &mut Harness, api: &testkit::apiserver::ApiServer) {
    h.tokens.add_refresh_token(SEED);
    put_credentials(h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    api.forbid("patch", "secrets");
    h.start_operator();
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_until("the refused write is reported", Duration::from_secs(30), || async {
        h.token("chain").await.status.and_then(|s| s.last_failure).is_some_and(|f| f.reason == "SecretWriteForbidden")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_of_the_rotated_refresh_token_keeps_it_and_stores_it_before_the_access_token() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    rotate_with_secret_writes_refused(&mut h, &api).await;
    let failure = h.token("chain").await.status.unwrap().last_failure.unwrap();
    assert!(failure.message.contains("chain-refresh-token"), "{}", failure.message);
    assert!(!failure.message.contains(&current(&h)), "{}", failure.message);
    assert_eq!(h.secret_token("chain", "token").await, None, "the access token waits for the refresh token to be safe");
    api.allow("patch", "secrets");
    // The retry (after the backoff) stores the rotated refresh token, then the access token
    // issued before: no second token request, and the chain is intact.
    h.wait_for_token_in_secret("chain", 1).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1);
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&current(&h)));
    h.finish().await;
}

/// Refresh-token grants sent that CSP rejected (a spent refresh token).
fn rejected(h: &Harness) -> usize {
    h.tokens.requests().iter().filter(|r| r.form_param("grant_type") == Some("refresh_token")).count() - issued(h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_writes_the_rotated_refresh_token_still_waiting_for_its_retry() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    rotate_with_secret_writes_refused(&mut h, &api).await;
    assert_ne!(current(&h), SEED, "the seed is spent");
    assert_eq!(secret_data(&h, "chain-refresh-token").await, None);

    // SIGTERM (a rollout, a node drain) before that retry: the stop writes it.
    api.allow("patch", "secrets");
    h.stop_operator().await;
    assert_eq!(secret_data(&h, "chain-refresh-token").await.expect("written on stop").get("refresh_token"), Some(&current(&h)));

    // The next process continues the chain (asked at once instead of after the backoff).
    h.start_operator();
    h.patch_token("chain", json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "now"}}})).await;
    h.wait_for_token_in_secret("chain", 2).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    assert_eq!(rejected(&h), 0, "no request ever sent a spent refresh token");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_outage_across_the_rotation_loses_nothing() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    h.tokens.add_refresh_token(SEED);
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    // Secret writes fail from before the rotation until a while after it.
    api.forbid("patch", "secrets");
    h.start_operator();
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_until("the seed is rotated", Duration::from_secs(20), || async { current(&h) != SEED }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    api.allow("patch", "secrets");

    h.wait_for_token_in_secret("chain", 1).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&current(&h)));
    // Ridden out within the reconcile: no failure was ever reported.
    let events = h.events("chain").await;
    assert!(events.iter().all(|(type_, _)| type_ != "Warning"), "{events:?}");
    assert_eq!(h.tokens.request_count(), 1, "no second token request");

    // The chain works on: the next refresh sends the rotated token.
    h.patch_token("chain", json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "now"}}})).await;
    h.wait_for_token_in_secret("chain", 2).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    assert_eq!(rejected(&h), 0);
    assert!(!h.events("chain").await.iter().any(|(_, reason)| reason == "RefreshTokenInvalid"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_navigator_token_deleted_and_created_again_continues_its_chain() {
    let mut h = Harness::new(LONG).await;
    h.tokens.add_refresh_token(SEED);
    put_credentials(&h, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    h.start_operator();
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_for_token_in_secret("chain", 1).await;
    let rotated = current(&h);
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&rotated));

    // A GitOps "replace": deleted (garbage collection takes its target Secret) and created again
    // with the same name and the same, spent, seed.
    h.delete_token("chain").await;
    h.wait_until("the NavigatorToken is gone", Duration::from_secs(20), || async {
        h.navigator_tokens().get_opt("chain").await.unwrap().is_none()
    })
    .await;
    // A real garbage collector takes a kind into account within its discovery resync (30 s).
    h.wait_until("its target Secret is collected", Duration::from_secs(60), || async {
        h.secrets().get_opt("chain").await.unwrap().is_none()
    })
    .await;
    assert_eq!(secret_data(&h, "chain-refresh-token").await.expect("the chain outlives it").get("refresh_token"), Some(&rotated));
    h.create_token("chain", refresh_token_spec()).await;
    h.wait_for_token_in_secret("chain", 2).await;
    h.wait_for_ready("chain", "True", "TokenValid").await;
    assert_eq!(h.tokens.requests().last().unwrap().form_param("refresh_token"), Some(rotated.as_str()));
    assert_eq!(rejected(&h), 0);
    assert_eq!(secret_data(&h, "chain-refresh-token").await.unwrap().get("refresh_token"), Some(&current(&h)));
    h.finish().await;
}

/// A refresh-token store as the operator writes it, for NavigatorToken `owner`.
fn store(owner: &str, orphaned_at: Option<&str>) -> Secret {
    let mut annotations = json!({"navigator.dev/refresh-token-for": owner, "navigator.dev/seed-sha256": "00"});
    if let Some(at) = orphaned_at {
        annotations["navigator.dev/orphaned-at"] = at.into();
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{owner}-refresh-token"), "labels": {"app.kubernetes.io/managed-by": "navigator-token-operator"},
                     "annotations": annotations},
        "stringData": {"refresh_token": "some-rotated-token"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_refresh_token_stores_are_marked_then_deleted_after_a_day_and_kept_while_their_token_exists() {
    let mut h = Harness::new(LONG).await;
    let long_ago = "2020-01-01T00:00:00Z";
    h.create_token("alive", refresh_token_spec()).await;
    for secret in [store("gone-long-ago", Some(long_ago)), store("just-gone", None), store("alive", Some(long_ago))] {
        h.secrets().create(&kube::api::PostParams::default(), &secret).await.unwrap();
    }
    h.start_operator();
    let annotation = |secret: Option<Secret>| secret.and_then(|s| s.metadata.annotations?.get("navigator.dev/orphaned-at").cloned());
    h.wait_until("the sweep after the first sync", Duration::from_secs(20), || async {
        h.secrets().get_opt("gone-long-ago-refresh-token").await.unwrap().is_none()
            && annotation(h.secrets().get_opt("just-gone-refresh-token").await.unwrap()).is_some()
            && annotation(h.secrets().get_opt("alive-refresh-token").await.unwrap()).is_none()
    })
    .await;
    assert!(h.secrets().get_opt("alive-refresh-token").await.unwrap().is_some(), "a NavigatorToken's store is never deleted");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_reaches_orphaned_stores_past_its_first_list_page() {
    let mut h = Harness::new(LONG).await;
    // The sweep lists 100 managed Secrets a page; a second page must be swept too.
    let owners: Vec<String> = (0..150).map(|i| format!("gone-{i:03}")).collect();
    for owner in &owners {
        h.secrets().create(&kube::api::PostParams::default(), &store(owner, None)).await.unwrap();
    }
    h.start_operator();
    let marked = || async {
        let listed = h.secrets().list(&kube::api::ListParams::default()).await.unwrap();
        listed.items.iter().filter(|s| s.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("navigator.dev/orphaned-at"))).count()
    };
    h.wait_until("every store marked by the first sweep", Duration::from_secs(20), || async { marked().await == owners.len() }).await;
    h.finish().await;
}
