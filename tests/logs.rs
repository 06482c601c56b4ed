//! The operator's JSON logs, read as a log pipeline (jq, Loki, Elasticsearch) reads them.
//! Against the test API server, or the real one `NAVIGATOR_TEST_KUBECONFIG` names.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{CREDS, Harness};

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_of_a_reconcile_names_the_navigator_token() {
    let h = Harness::new(Duration::from_secs(3600)).await;
    // One that succeeds and one that fails: both log inside their reconcile span.
    h.create_token("conflict", json!({"target": {"secretName": "conflict-token"}})).await;
    h.create_token("broken", json!({"credentialsSecretRef": {"name": CREDS, "clientSecretKey": "no_such_key"}})).await;
    let kubeconfig = h.kubeconfig_file(&std::env::temp_dir());
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--admin-addr", "127.0.0.1:0", "--namespaces", &h.ns, "--allowed-endpoint-hosts", "127.0.0.1"])
        .args(["--log-format", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,navigator_token_operator=debug,kube=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    h.wait_until("both NavigatorTokens reconciled", Duration::from_secs(20), || async {
        let issued = h.token("conflict").await.status.is_some_and(|s| s.expires_at.is_some());
        issued && h.token("broken").await.status.is_some_and(|s| s.last_failure.is_some())
    })
    .await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.expect("operator stops").unwrap();
    if h.api.is_some() {
        let _ = std::fs::remove_file(&kubeconfig);
    }

    let log = String::from_utf8_lossy(&output.stdout);
    let mut in_span = 0;
    for line in log.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let Some(span) = entry.get("span").filter(|s| s["name"] == "reconcile") else { continue };
        in_span += 1;
        assert_eq!(span["namespace"], h.ns, "{line}");
        assert!(span["navigatortoken"] == "conflict" || span["navigatortoken"] == "broken", "{line}");
    }
    assert!(in_span >= 2, "no reconcile log lines:\n{log}");
    h.finish().await;
}
