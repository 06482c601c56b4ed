//! Tokens, id tokens, client secrets and Authorization values never reach logs (captured at
//! debug level for every crate), events, status or error messages, across successes and faults.

mod support;

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::events::v1::Event;
use kube::api::Api;
use serde_json::json;
use support::Harness;
use testkit::token_server::Scripted;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_in_logs_events_or_status() {
    let logs = support::capture_logs();

    let mut h = Harness::new(Duration::from_secs(600)).await;
    h.start_operator();
    h.create_token("csp", json!({"target": {"idTokenKey": "id_token"}})).await;
    h.create_token("nav", json!({"endpoint": {"type": "Navigator"}, "target": {"idTokenKey": "id_token"}})).await;
    h.wait_until("both issued", Duration::from_secs(20), || async { h.tokens.issued().len() == 2 }).await;

    // Faults whose bodies echo the credentials back, then wrong credentials.
    let echo = json!({"message": "rejected client testkit-secret / Basic dGVzdGtpdC1jbGllbnQ6dGVzdGtpdC1zZWNyZXQ=", "cspErrorCode": "echo", "requestId": "r-1"});
    h.tokens.set_default(Some(Scripted::status(400, "application/json", &echo.to_string())));
    h.create_token("echo", json!({})).await;
    h.wait_until("echo failed", Duration::from_secs(20), || async { h.ready("echo").await.is_some_and(|(_, r)| r == "BadRequest") }).await;
    h.tokens.set_default(Some(Scripted::RawBody(r#"{"access_token": "raw-token-in-a-broken-body", "expires_in": [}"#.into())));
    h.create_token("broken", json!({})).await;
    h.wait_until("broken failed", Duration::from_secs(20), || async {
        h.ready("broken").await.is_some_and(|(_, r)| r == "MalformedResponse")
    })
    .await;
    h.tokens.set_default(None);
    h.tokens.set_credentials("testkit-client", "another-secret");
    h.create_token("denied", json!({"endpoint": {"type": "Navigator"}})).await;
    h.wait_until("denied", Duration::from_secs(20), || async { h.ready("denied").await.is_some_and(|(_, r)| r == "Unauthorized") }).await;

    // A ClusterNavigatorToken writing into a tenant namespace, and one refused its credentials.
    h.stop_operator().await;
    h.tokens.set_credentials("testkit-client", "testkit-secret");
    let tenant = support::unique_namespace();
    h.create_namespace(&tenant, &[]).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("shared", json!({"target": {"namespaces": [tenant], "idTokenKey": "id_token"}})).await;
    let refused = json!({"credentialsSecretRef": {"name": support::CREDS, "namespace": tenant}, "target": {"namespaces": [tenant]}});
    h.create_cluster_token("refused", refused).await;
    h.wait_until("the cluster token is written", Duration::from_secs(20), || async {
        h.token_in(&tenant, "shared").await.is_some() && h.cluster_ready("refused").await.is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    assert!(h.cluster_has_event("refused", "Warning", "CredentialsNamespaceNotAllowed").await);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut secrets: Vec<String> = vec![
        "testkit-secret".into(),
        "another-secret".into(),
        "raw-token-in-a-broken-body".into(),
        base64::engine::general_purpose::STANDARD.encode("testkit-client:testkit-secret"),
    ];
    for issued in h.tokens.issued() {
        secrets.push(issued.access_token.clone());
        secrets.push(issued.id_token.clone());
        // JWT parts are long and unique; a partial leak (e.g. the signature) counts too.
        secrets.extend(issued.access_token.split('.').skip(1).map(str::to_owned));
    }

    let mut statuses = serde_json::to_string(&h.navigator_tokens().list(&Default::default()).await.unwrap().items).unwrap();
    statuses += &serde_json::to_string(&h.cluster_tokens().list(&Default::default()).await.unwrap().items).unwrap();
    // Events about ClusterNavigatorTokens go to `default`.
    let events = serde_json::to_string(&Api::<Event>::all(h.client.clone()).list(&Default::default()).await.unwrap().items).unwrap();
    assert!(events.contains("CredentialsNamespaceNotAllowed") && statuses.contains("CredentialsNamespaceNotAllowed"));
    let log_text = logs.text();
    assert!(log_text.contains("capture is live") && log_text.contains("issued a token"), "logs were not captured");
    assert!(events.contains("Issued") && statuses.contains("Unauthorized"), "events and status were not collected");
    for secret in &secrets {
        assert!(!log_text.contains(secret.as_str()), "a secret reached the logs: …{}", &secret[..secret.len().min(12)]);
        assert!(!events.contains(secret.as_str()), "a secret reached an event");
        assert!(!statuses.contains(secret.as_str()), "a secret reached a status");
    }
    // The target Secrets do hold the tokens: the scan would have found them there.
    let stored = h.secret_token("csp", "token").await.unwrap();
    assert!(secrets.contains(&stored));
    assert!(secrets.contains(&h.token_in(&tenant, "shared").await.unwrap()));
    h.finish().await;
}
