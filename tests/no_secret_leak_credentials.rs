//! API tokens and refresh tokens (seeds and rotated ones) never reach logs (captured at debug
//! level for every crate), events or status, across success, rotation and rejection. Its own test
//! binary: the log capture is process-wide.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{CREDS, Harness};

const API_TOKEN: &str = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9BqW2eR4tY6uI8oP0";
const REVOKED: &str = "Rv0kEdAp1T0kEn9Xy8Wv7Ut6Sr5Qp4On3Ml2Kj1";
const SEED: &str = "seed-refresh-token-Hx7Kp2Lm9Qw4Rt6Yz8Ab";
const UNKNOWN_SEED: &str = "unknown-refresh-Mn3Bv5Cx7Zl9Kj2Hg4Fd";

async fn put_secret(h: &Harness, name: &str, data: serde_json::Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": {"navigator.dev/credentials": "true"}},
        "stringData": data,
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &h.ns)
        .patch(name, &PatchParams::apply("scenario-test").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_refresh_tokens_never_reach_logs_events_or_status() {
    let logs = support::capture_logs();

    let mut h = Harness::new(Duration::from_secs(4)).await;
    h.tokens.add_api_token(API_TOKEN, Some(std::time::SystemTime::now() + Duration::from_secs(10 * 24 * 3600)));
    h.tokens.add_api_token(REVOKED, None);
    h.tokens.revoke_api_token(REVOKED);
    h.tokens.add_refresh_token(SEED);
    put_secret(&h, "api-creds", json!({"api_token": API_TOKEN})).await;
    put_secret(&h, "revoked-creds", json!({"api_token": REVOKED})).await;
    put_secret(&h, CREDS, json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": SEED})).await;
    put_secret(&h, "spent-creds", json!({"client_id": "testkit-client", "client_secret": "testkit-secret", "refresh_token": UNKNOWN_SEED}))
        .await;
    h.start_operator();
    h.create_token("api", json!({"credentialsSecretRef": {"name": "api-creds", "apiTokenKey": "api_token"}})).await;
    h.create_token("revoked", json!({"credentialsSecretRef": {"name": "revoked-creds", "apiTokenKey": "api_token"}})).await;
    h.create_token("chain", json!({"credentialsSecretRef": {"refreshTokenKey": "refresh_token"}})).await;
    h.create_token("spent", json!({"credentialsSecretRef": {"name": "spent-creds", "refreshTokenKey": "refresh_token"}})).await;
    h.wait_for_ready("revoked", "False", "APITokenInvalid").await;
    h.wait_for_ready("spent", "False", "RefreshTokenInvalid").await;
    // A few rotations of the chain (4 s tokens refresh every 2-3 s).
    h.wait_until("the chain rotated twice", Duration::from_secs(20), || async {
        h.tokens.requests().iter().filter(|r| r.form_param("refresh_token").is_some_and(|t| t.starts_with("testkit-refresh-"))).count() >= 2
    })
    .await;
    h.wait_until("the API token's expiry is known", Duration::from_secs(10), || async {
        h.token("api").await.status.and_then(|s| s.credentials).is_some_and(|c| c.api_token_expires_at.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut secrets: Vec<String> = [API_TOKEN, REVOKED, SEED, UNKNOWN_SEED].map(str::to_owned).to_vec();
    // Every refresh token the chain went through, and the quoted starts CSP's messages carry.
    secrets.extend(h.tokens.requests().iter().filter_map(|r| r.form_param("refresh_token").map(str::to_owned)));
    secrets.extend(h.tokens.valid_refresh_tokens());
    secrets.extend([&API_TOKEN[..10], &REVOKED[..10], &UNKNOWN_SEED[..10]].map(str::to_owned));
    let statuses = serde_json::to_string(&h.navigator_tokens().list(&Default::default()).await.unwrap().items).unwrap();
    let events =
        serde_json::to_string(&Api::<Event>::namespaced(h.client.clone(), &h.ns).list(&Default::default()).await.unwrap().items).unwrap();
    let log_text = logs.text();
    assert!(log_text.contains("issued a token") && log_text.contains("stored the rotated refresh token"), "logs were not captured");
    assert!(statuses.contains("APITokenInvalid") && statuses.contains("RefreshTokenInvalid") && statuses.contains("apiTokenExpiresAt"));
    assert!(events.contains("APITokenExpiringSoon"), "events were not collected");
    for secret in &secrets {
        assert!(!log_text.contains(secret.as_str()), "a credential reached the logs: …{}", &secret[..secret.len().min(8)]);
        assert!(!events.contains(secret.as_str()), "a credential reached an event");
        assert!(!statuses.contains(secret.as_str()), "a credential reached a status");
    }
    h.finish().await;
}
