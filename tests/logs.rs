//! The operator's JSON logs, read as a log pipeline (jq, Loki, Elasticsearch) reads them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::token_server::{TokenServer, TokenServerConfig};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_of_a_reconcile_names_the_navigator_token() {
    let api = ApiServer::start().await;
    let tokens = TokenServer::start(TokenServerConfig::default()).await;
    api.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "team-a", "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"client_id": "testkit-client", "client_secret": "testkit-secret"},
    }));
    // One that succeeds and one that fails: both log inside their reconcile span.
    for (name, client_secret_key) in [("conflict", "client_secret"), ("broken", "no_such_key")] {
        api.insert(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
                     "credentialsSecretRef": {"name": "creds", "clientSecretKey": client_secret_key},
                     "endpoint": {"type": "CSP", "url": tokens.base_url()},
                     "target": {"secretName": format!("{name}-token")}},
        }));
    }
    let kubeconfig = std::env::temp_dir().join(format!("nvt-logs-test-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--admin-addr", "127.0.0.1:0", "--namespaces", "team-a", "--allowed-endpoint-hosts", "127.0.0.1"])
        .args(["--log-format", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,navigator_token_operator=debug,kube=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = || {
        let status = |name: &str| api.get("navigator.dev/v1alpha1", "navigatortokens", Some("team-a"), name).map(|t| t["status"].clone());
        status("conflict").is_some_and(|s| s["expiresAt"].is_string()) && status("broken").is_some_and(|s| s["lastFailure"].is_object())
    };
    while !done() {
        assert!(Instant::now() < deadline, "the operator did not reconcile both NavigatorTokens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.expect("operator stops").unwrap();
    let _ = std::fs::remove_file(&kubeconfig);

    let log = String::from_utf8_lossy(&output.stdout);
    let mut in_span = 0;
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let Some(span) = entry.get("span").filter(|s| s["name"] == "reconcile") else { continue };
        in_span += 1;
        assert_eq!(span["namespace"], "team-a", "{line}");
        assert!(span["navigatortoken"] == "conflict" || span["navigatortoken"] == "broken", "{line}");
    }
    assert!(in_span >= 2, "no reconcile log lines:\n{log}");
}
