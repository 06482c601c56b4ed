//! ClusterNavigatorToken scenarios: the real controller (watches, reconciles, writes) against an
//! API server and the token endpoint stand-in, with many namespaces. Each asserts token-request
//! and API-request counts.

mod support;

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use navigator_token_operator::crd::ClusterNavigatorTokenStatus;
use serde_json::json;
use support::{CREDS, Harness, unique_namespace};
use testkit::token_server::{API_TOKEN_DETAILS_PATH, Scripted};

/// Short enough that a refresh window passes in a test, long enough that the next one does not
/// while the test looks at 50 namespaces on a busy machine.
const SHORT: Duration = Duration::from_secs(24);
/// Long enough that no refresh falls inside a test.
const LONG: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(30);

/// `n` namespaces labelled `tenant=<label>`, named after the harness namespace.
async fn tenants(h: &Harness, label: &str, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let name = unique_namespace();
        h.create_namespace(&name, &[("tenant", label)]).await;
        names.push(name);
    }
    names
}

fn selecting(label: &str) -> serde_json::Value {
    json!({"target": {"secretName": "vendor-token", "namespaceSelector": {"matchLabels": {"tenant": label}}}})
}

/// Waits until every namespace's `vendor-token` holds token number `issued` of the stand-in.
async fn all_hold(h: &Harness, namespaces: &[String], issued: usize) {
    h.wait_until(&format!("{} namespaces hold token #{issued}", namespaces.len()), WAIT, || async {
        let Some(want) = h.tokens.issued().get(issued - 1).map(|t| t.access_token.clone()) else { return false };
        for ns in namespaces {
            if h.token_in(ns, "vendor-token").await.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    })
    .await;
}

async fn counts(h: &Harness, name: &str) -> Option<(u32, u32, u32)> {
    h.cluster_status(name).await?.namespaces.map(|c| (c.selected, c.written, c.failed))
}

async fn wait_counts(h: &Harness, name: &str, want: (u32, u32, u32)) {
    h.wait_until(&format!("{name} counts {want:?}"), WAIT, || async { counts(h, name).await == Some(want) }).await;
}

async fn wait_ready(h: &Harness, name: &str, status: &str, reason: &str) {
    h.wait_until(&format!("{name} Ready={status} {reason}"), WAIT, || async {
        h.cluster_ready(name).await.is_some_and(|(s, r, _)| s == status && r == reason)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_request_per_window_for_fifty_namespaces() {
    let mut h = Harness::new(SHORT).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 50).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_counts(&h, "vendor", (50, 50, 0)).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1, "one request for 50 namespaces");
    let after_first = h.api_counts();

    // The next window: one request, then the same token in all 50.
    h.wait_until("a refresh", SHORT, || async { h.tokens.request_count() >= 2 }).await;
    all_hold(&h, &namespaces, 2).await;
    let second = h.tokens.issued()[1].clone();
    h.wait_until("status shows the refreshed token", WAIT, || async {
        let status = h.cluster_status("vendor").await.unwrap();
        status.token.expires_at.as_deref().is_some_and(|e| e.parse::<jiff::Timestamp>().unwrap().as_second() as u64 == second.exp)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.tokens.request_count(), 2, "one request per window, however many namespaces");
    let refresh = h.api_counts().since(&after_first);
    // One write per namespace, and one of the store in the credentials namespace.
    assert_eq!(refresh.get("patch", "secrets"), 51, "{refresh:?}");
    assert_eq!(refresh.get("patch", "clusternavigatortokens/status"), 1, "{refresh:?}");
    assert_eq!(refresh.writes(), 52, "a routine refresh: N + 1 Secret writes and one status write: {refresh:?}");
    assert_eq!(refresh.verb("get"), 0, "Secrets and credentials come from watch caches: {refresh:?}");

    // What a tenant sees: the token and its times, never the client credentials.
    let secret = Api::<Secret>::namespaced(h.client.clone(), &namespaces[7]).get("vendor-token").await.unwrap();
    let keys: Vec<String> = secret.data.clone().unwrap().into_keys().collect();
    assert_eq!(keys, ["token"]);
    let text = serde_json::to_string(&secret).unwrap();
    assert!(!text.contains("testkit-secret") && !text.contains(CREDS), "no trace of the credentials: {text}");
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["navigator.dev/cluster-token"], "vendor");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ClusterNavigatorToken", "vendor"));
    // Status, Events and metrics never hold the token or the client secret.
    let status = serde_json::to_string(&h.cluster_status("vendor").await).unwrap();
    let metrics = h.metrics.encode();
    for token in h.tokens.issued() {
        assert!(!status.contains(&token.access_token) && !metrics.contains(&token.access_token));
    }
    assert!(!status.contains("testkit-secret"));
    assert_eq!(h.cluster_events("vendor").await, vec![("Normal".to_owned(), "Issued".to_owned())]);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_added_relabelled_out_and_deleted() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let first = tenants(&h, &label, 3).await;
    h.start_cluster_operator().await;
    // Also one namespace by name, without the label.
    let named = unique_namespace();
    h.create_namespace(&named, &[]).await;
    let mut spec = selecting(&label);
    spec["target"]["namespaces"] = json!([named]);
    h.create_cluster_token("vendor", spec).await;
    let mut all = first.clone();
    all.push(named.clone());
    all_hold(&h, &all, 1).await;
    wait_counts(&h, "vendor", (4, 4, 0)).await;

    // A namespace that starts to match gets the same token within seconds, without a request.
    let late = unique_namespace();
    let started = std::time::Instant::now();
    h.create_namespace(&late, &[("tenant", &label)]).await;
    all_hold(&h, std::slice::from_ref(&late), 1).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    wait_counts(&h, "vendor", (5, 5, 0)).await;

    // Relabelled out: its Secret is deleted (deletionPolicy Delete), the others stay.
    let namespaces = Api::<Namespace>::all(h.client.clone());
    let relabel = json!({"metadata": {"labels": {"tenant": "someone-else"}}});
    namespaces.patch(&first[0], &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    h.wait_until("the Secret of the relabelled namespace is deleted", WAIT, || async {
        h.token_in(&first[0], "vendor-token").await.is_none()
    })
    .await;
    wait_counts(&h, "vendor", (4, 4, 0)).await;
    assert!(h.token_in(&first[1], "vendor-token").await.is_some());

    // A namespace being deleted is skipped quietly: no write, no failure, no Event. In-process
    // it stays Terminating until purged; a real namespace controller empties it at its pace.
    if let Some(api) = &h.api {
        api.terminate_namespace(&first[1]);
        wait_counts(&h, "vendor", (3, 3, 0)).await;
        api.purge_namespace(&first[1]);
    } else {
        namespaces.delete(&first[1], &Default::default()).await.unwrap();
        wait_counts(&h, "vendor", (3, 3, 0)).await;
    }
    // Deleted through the API (terminating, then emptied and gone).
    namespaces.delete(&named, &Default::default()).await.unwrap();
    wait_counts(&h, "vendor", (2, 2, 0)).await;
    h.wait_until("the deleted namespace is gone", Duration::from_secs(120), || async {
        namespaces.get_opt(&named).await.unwrap().is_none()
    })
    .await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1, "namespaces coming and going cost no token request");
    assert_eq!(h.cluster_events("vendor").await, vec![("Normal".to_owned(), "Issued".to_owned())], "no warnings");

    // deletionPolicy Retain: a namespace that stops matching keeps its Secret.
    h.cluster_tokens()
        .patch("vendor", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"target": {"deletionPolicy": "Retain"}}})))
        .await
        .unwrap();
    h.wait_until("Secrets rewritten without an owner", WAIT, || async {
        let secret = Api::<Secret>::namespaced(h.client.clone(), &late).get("vendor-token").await.unwrap();
        secret.metadata.owner_references.unwrap_or_default().is_empty()
    })
    .await;
    namespaces.patch(&late, &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    wait_counts(&h, "vendor", (1, 1, 0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.token_in(&late, "vendor-token").await.is_some(), "Retain leaves the Secret");
    assert_eq!(h.tokens.request_count(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trouble_in_one_namespace_stays_in_that_namespace() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 4).await;
    // A foreign Secret with the target name in one namespace, a full quota in another.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vendor-token"}, "stringData": {"token": "theirs"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &namespaces[1]).create(&PostParams::default(), &foreign).await.unwrap();
    let quota =
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-secrets"}, "spec": {"hard": {"count/secrets": "0"}}});
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = Api::namespaced(h.client.clone(), &namespaces[2]);
    quotas.create(&PostParams::default(), &serde_json::from_value(quota).unwrap()).await.unwrap();
    // A NavigatorToken already owns the Secret name in the fourth: the first writer keeps it.
    let mut nvt_harness_ns = h.ns.clone();
    std::mem::swap(&mut nvt_harness_ns, &mut h.ns);
    h.ns = namespaces[3].clone();
    h.put_credentials("testkit-client", "testkit-secret").await;
    h.start_operator();
    h.create_token("vendor-token", json!({})).await;
    h.wait_until("the NavigatorToken wrote its Secret", WAIT, || async { h.secret_token("vendor-token", "token").await.is_some() }).await;
    h.stop_operator().await;
    h.ns = nvt_harness_ns;
    let nvt_token = h.token_in(&namespaces[3], "vendor-token").await;

    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces[..1], 2).await;
    wait_counts(&h, "vendor", (4, 1, 3)).await;
    wait_ready(&h, "vendor", "False", "NamespacesFailing").await;
    let status = h.cluster_status("vendor").await.unwrap();
    let reasons: Vec<(String, String)> = status.namespace_failures.iter().map(|f| (f.namespace.clone(), f.reason.clone())).collect();
    let mut want = vec![
        (namespaces[1].clone(), "SecretConflict".to_owned()),
        (namespaces[2].clone(), "SecretQuotaExceeded".to_owned()),
        (namespaces[3].clone(), "SecretConflict".to_owned()),
    ];
    want.sort();
    assert_eq!(reasons, want);
    assert_eq!(h.token_in(&namespaces[1], "vendor-token").await.as_deref(), Some("theirs"), "a foreign Secret is never touched");
    assert_eq!(h.token_in(&namespaces[3], "vendor-token").await, nvt_token, "nor a NavigatorToken's");
    assert!(h.tokens.request_count() <= 2, "one for the NavigatorToken, one for the cluster token");
    assert!(h.cluster_has_event("vendor", "Warning", "SecretConflict").await);
    assert!(h.cluster_has_event("vendor", "Warning", "SecretQuotaExceeded").await);

    // Fixing one namespace writes it with the token already issued.
    Api::<Secret>::namespaced(h.client.clone(), &namespaces[1]).delete("vendor-token", &Default::default()).await.unwrap();
    quotas.delete("no-secrets", &Default::default()).await.unwrap();
    h.wait_until("the fixed namespaces are written", Duration::from_secs(90), || async { counts(&h, "vendor").await == Some((4, 3, 1)) })
        .await;
    assert_eq!(h.tokens.request_count(), 2, "a namespace's trouble never costs another token request");

    // The NavigatorToken sees the cluster token's Secrets as foreign too.
    h.stop_operator().await;
    h.ns = namespaces[0].clone();
    h.put_credentials("testkit-client", "testkit-secret").await;
    h.start_operator();
    h.create_token("vendor-token", json!({})).await;
    h.wait_for_ready("vendor-token", "False", "SecretConflict").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_outside_the_allowed_namespace_are_refused() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 2).await;
    // Valid credentials, labelled, in a tenant namespace the operator does not allow.
    let tenant_creds: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CREDS, "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"client_id": "testkit-client", "client_secret": "testkit-secret"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(h.client.clone(), &namespaces[0]).create(&PostParams::default(), &tenant_creds).await.unwrap();
    h.start_cluster_operator().await;
    let mut spec = selecting(&label);
    spec["credentialsSecretRef"] = json!({"name": CREDS, "namespace": namespaces[0]});
    h.create_cluster_token("vendor", spec).await;
    wait_ready(&h, "vendor", "False", "CredentialsNamespaceNotAllowed").await;
    let (_, _, message) = h.cluster_ready("vendor").await.unwrap();
    assert!(
        message.contains(&namespaces[0]) && message.contains(&h.ns) && message.contains("--cluster-credentials-namespace"),
        "{message}"
    );
    assert!(h.cluster_has_event("vendor", "Warning", "CredentialsNamespaceNotAllowed").await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.tokens.request_count(), 0, "no token request with refused credentials");
    for ns in &namespaces {
        assert!(h.token_in(ns, "vendor-token").await.is_none());
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_requests_and_writes_nothing() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 10).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    wait_counts(&h, "vendor", (10, 10, 0)).await;
    h.stop_operator().await;

    h.start_cluster_operator().await;
    h.wait_synced().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restart = h.api_counts();
    assert_eq!(h.tokens.request_count(), 1, "no token request after a restart");
    assert_eq!(restart.writes(), 0, "no writes after a restart: {restart:?}");
    // The token is read back once from its store, never from a namespace's copy.
    assert_eq!(restart.get("get", "secrets"), 1, "one GET of the store after a restart: {restart:?}");
    assert_eq!(restart.verb("get"), 1, "{restart:?}");

    // A new namespace costs no token request.
    let late = unique_namespace();
    h.create_namespace(&late, &[("tenant", &label)]).await;
    all_hold(&h, std::slice::from_ref(&late), 1).await;
    wait_counts(&h, "vendor", (11, 11, 0)).await;
    let added = h.api_counts().since(&restart);
    assert_eq!(h.tokens.request_count(), 1);
    assert_eq!(added.get("patch", "secrets"), 1, "{added:?}");
    // One GET of the new namespace's Secret (is a foreign one there?); the token is in memory.
    assert_eq!(added.get("get", "secrets"), 1, "{added:?}");

    // A new secretName: a new token under the new name everywhere, the old Secrets deleted.
    let mut all = namespaces.clone();
    all.push(late);
    let rename = json!({"spec": {"target": {"secretName": "vendor-token-v2"}}});
    h.cluster_tokens().patch("vendor", &PatchParams::default(), &Patch::Merge(&rename)).await.unwrap();
    h.wait_until("Secrets renamed", WAIT, || async {
        for ns in &all {
            if h.token_in(ns, "vendor-token").await.is_some() || h.token_in(ns, "vendor-token-v2").await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(h.tokens.request_count(), 2, "the Secret name is an input of the token, as for a NavigatorToken");

    // Deleted: its Secrets go with it (owner references, garbage collection); nothing re-creates them.
    h.cluster_tokens().delete("vendor", &Default::default()).await.unwrap();
    h.wait_until("every Secret deleted with its ClusterNavigatorToken", WAIT, || async {
        for ns in &all {
            if h.token_in(ns, "vendor-token-v2").await.is_some() {
                return false;
            }
        }
        true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ns in &all {
        assert!(h.token_in(ns, "vendor-token-v2").await.is_none());
    }
    assert_eq!(h.tokens.request_count(), 2);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_that_misses_a_refresh_lags_while_its_token_is_valid() {
    let mut h = Harness::new(Duration::from_secs(20)).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 3).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    // Someone marks one namespace's Secret immutable: it cannot take the next token.
    let frozen = Api::<Secret>::namespaced(h.client.clone(), &namespaces[0]);
    frozen.patch("vendor-token", &PatchParams::default(), &Patch::Merge(&json!({"immutable": true}))).await.unwrap();
    h.wait_until("a refresh", WAIT, || async { h.tokens.request_count() >= 2 }).await;
    all_hold(&h, &namespaces[1..], 2).await;
    wait_ready(&h, "vendor", "True", "NamespacesLagging").await;
    let status = h.cluster_status("vendor").await.unwrap();
    let counts = status.namespaces.unwrap();
    assert_eq!((counts.selected, counts.written, counts.failed), (3, 2, 1));
    assert_eq!(
        (status.namespace_failures[0].namespace.as_str(), status.namespace_failures[0].reason.as_str()),
        (namespaces[0].as_str(), "SecretImmutable")
    );
    let message = h.cluster_ready("vendor").await.unwrap().2;
    assert!(message.starts_with("1 of 3 namespaces lag behind the current token"), "{message}");
    assert_eq!(h.tokens.request_count(), 2, "a failing namespace costs no token request");
    assert!(h.cluster_has_event("vendor", "Warning", "SecretImmutable").await);
    // It still holds the first token, valid until that expires.
    assert_eq!(h.token_in(&namespaces[0], "vendor-token").await.as_deref(), Some(h.tokens.issued()[0].access_token.as_str()));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn navigator_tokens_are_not_held_up_when_the_cluster_kind_cannot_be_watched() {
    if support::skip_on_real_cluster("navigator_tokens_are_not_held_up_when_the_cluster_kind_cannot_be_watched") {
        return;
    }
    let mut h = Harness::new(LONG).await;
    // As with an old ClusterRole: no access to ClusterNavigatorTokens or Namespaces.
    let api = h.api.clone().unwrap();
    for (verb, resource) in [("list", "clusternavigatortokens"), ("watch", "clusternavigatortokens"), ("list", "namespaces")] {
        api.forbid(verb, resource);
    }
    h.start_cluster_operator().await;
    h.create_token("t1", json!({})).await;
    h.wait_for_token_in_secret("t1", 1).await;
    h.wait_for_ready("t1", "True", "TokenValid").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_tokens_own_expiry_is_asked_once_for_all_namespaces_and_reported() {
    const API_TOKEN: &str = "Vc4nM8bX2zL6kJ0hG3fD5sA7pO9iU1yT4rE6wQ8aZ2x";
    const DAY: Duration = Duration::from_secs(24 * 3600);
    // Short enough that a refresh happens in the test: the API token is not asked about again.
    let mut h = Harness::new(Duration::from_secs(8)).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 3).await;
    let expires = SystemTime::now() + 20 * DAY;
    h.tokens.add_api_token(API_TOKEN, Some(expires));
    let credentials: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CREDS, "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"api_token": API_TOKEN},
    }))
    .unwrap();
    h.secrets().replace(CREDS, &PostParams::default(), &credentials).await.expect("replace credentials");
    h.start_cluster_operator().await;
    let mut spec = selecting(&label);
    spec["credentialsSecretRef"]["apiTokenKey"] = json!("api_token");
    h.create_cluster_token("vendor", spec).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.tokens.requests()[0].form_param("api_token"), Some(API_TOKEN), "the API token is exchanged");

    let expiring = |status: &ClusterNavigatorTokenStatus| {
        status
            .token
            .conditions
            .iter()
            .find(|c| c.type_ == "CredentialsExpiring")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    h.wait_until("CredentialsExpiring in status", WAIT, || async { h.cluster_status("vendor").await.and_then(|s| expiring(&s)).is_some() })
        .await;
    let status = h.cluster_status("vendor").await.unwrap();
    let reported: jiff::Timestamp =
        status.token.credentials.as_ref().and_then(|c| c.api_token_expires_at.as_deref()).expect("apiTokenExpiresAt").parse().unwrap();
    let expected = jiff::Timestamp::try_from(expires).unwrap();
    assert!((reported.as_second() - expected.as_second()).abs() <= 1, "{reported} vs {expected}");
    let (state, reason, message) = expiring(&status).unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("True", "APITokenExpiringSoon"));
    assert!(message.contains(&format!("Secret {}/{CREDS}", h.ns)) && message.contains("expires at"), "{message}");
    assert!(h.cluster_has_event("vendor", "Warning", "APITokenExpiringSoon").await);
    // The series of a cluster-scoped object has an empty namespace.
    let series = h.series("navigator_token_api_token_expiry_timestamp_seconds", "vendor").expect("expiry series");
    assert_eq!(
        series,
        format!(r#"navigator_token_api_token_expiry_timestamp_seconds{{namespace="",name="vendor"}} {}"#, reported.as_second())
    );

    // A refresh writes every namespace again; CSP was asked once, not per namespace or window.
    all_hold(&h, &namespaces, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let details = h.tokens.requests().iter().filter(|r| r.path == API_TOKEN_DETAILS_PATH).count();
    assert_eq!(details, 1, "one details call for {} namespaces and two tokens", namespaces.len());
    let warnings = h.cluster_events("vendor").await.into_iter().filter(|(_, r)| r == "APITokenExpiringSoon").count();
    assert_eq!(warnings, 1, "warned once");
    let status = serde_json::to_string(&h.cluster_status("vendor").await).unwrap();
    assert!(!status.contains(API_TOKEN) && !h.metrics.encode().contains(API_TOKEN), "the API token is never shown");

    // Revoked: as for a NavigatorToken, Ready turns False at once and nothing is retried by
    // time (no next refresh) until the credentials change; the valid token stays in the Secrets.
    h.tokens.revoke_api_token(API_TOKEN);
    let before = h.tokens.request_count();
    let renew = json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": "revoked"}}});
    h.cluster_tokens().patch("vendor", &PatchParams::default(), &Patch::Merge(&renew)).await.unwrap();
    wait_ready(&h, "vendor", "False", "APITokenInvalid").await;
    let status = h.cluster_status("vendor").await.unwrap();
    assert_eq!(status.token.next_refresh_at, None, "rejected credentials are not retried by time");
    assert!(status.token.expires_at.is_some(), "the valid token is still described");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.tokens.request_count(), before + 1, "one attempt, no retries");
    h.finish().await;
}

/// What a tenant with `edit` in its namespace can do to its copy: a token of its choosing, with
/// annotations that describe it consistently.
async fn forge(h: &Harness, namespace: &str, forged: &str, expires_at: Option<&str>) {
    use navigator_token_operator::controller::secret::{DATA_FINGERPRINT_ANNOTATION, fingerprint};
    let mut annotations = json!({
        "navigator.dev/token-sha256": fingerprint(forged.as_bytes()),
        DATA_FINGERPRINT_ANNOTATION: null,
    });
    if let Some(expires_at) = expires_at {
        annotations["navigator.dev/issued-at"] = json!(jiff::Timestamp::now().round(jiff::Unit::Second).unwrap().to_string());
        annotations["navigator.dev/expires-at"] = json!(expires_at);
    }
    let patch = json!({"metadata": {"annotations": annotations}, "stringData": {"token": forged}});
    let api = Api::<Secret>::namespaced(h.client.clone(), namespace);
    api.patch("vendor-token", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("the tenant edits its copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_forged_copy_is_repaired_and_never_reaches_another_namespace() {
    const FORGED: &str = "eyJ.forged-by-the-tenant.sig";
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 2).await;
    let (a, b) = (&namespaces[0], &namespaces[1]);
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    let issued = h.tokens.issued()[0].clone();

    // The tenant of A claims a token issued now that lasts until 2100.
    forge(&h, a, FORGED, Some("2100-01-01T00:00:00Z")).await;
    h.wait_until("A's copy repaired with the real token", WAIT, || async {
        h.token_in(a, "vendor-token").await.as_deref() == Some(issued.access_token.as_str())
    })
    .await;
    assert!(h.cluster_has_event("vendor", "Warning", "SecretTampered").await, "{:?}", h.cluster_events("vendor").await);
    assert_eq!(h.token_in(b, "vendor-token").await.as_deref(), Some(issued.access_token.as_str()));
    let status = h.cluster_status("vendor").await.unwrap();
    let expires_at: jiff::Timestamp = status.token.expires_at.unwrap().parse().unwrap();
    assert_eq!(expires_at.as_second() as u64, issued.exp, "status describes the token the operator issued");
    assert_eq!(h.tokens.request_count(), 1, "a repair costs no token request");

    // While the operator is down the tenant forges again, this time keeping the real times; a
    // namespace that starts to match after the restart gets the real token, A is repaired.
    h.stop_operator().await;
    forge(&h, a, FORGED, None).await;
    h.start_cluster_operator().await;
    let late = unique_namespace();
    h.create_namespace(&late, &[("tenant", &label)]).await;
    let all = [a.clone(), b.clone(), late.clone()];
    all_hold(&h, &all, 1).await;
    wait_counts(&h, "vendor", (3, 3, 0)).await;
    assert_eq!(h.tokens.request_count(), 1, "recovered from the store, not from a copy and not by a new request");
    for ns in &all {
        assert_ne!(h.token_in(ns, "vendor-token").await.as_deref(), Some(FORGED));
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_changed_while_the_operator_was_down_is_rendered_at_once_with_the_same_token() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 3).await;
    let mut spec = selecting(&label);
    spec["target"]["template"] = json!({"data": {"authorization": "Bearer {{ accessToken }}"}});
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", spec).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    h.stop_operator().await;

    let retemplate = json!({"spec": {"target": {"template": {"data": {"authorization": "Token {{ accessToken }}"}}}}});
    h.cluster_tokens().patch("vendor", &PatchParams::default(), &Patch::Merge(&retemplate)).await.unwrap();
    h.start_cluster_operator().await;
    let want = format!("Token {}", h.tokens.issued()[0].access_token);
    h.wait_until("every namespace re-rendered", WAIT, || async {
        for ns in &namespaces {
            let secret = Api::<Secret>::namespaced(h.client.clone(), ns).get("vendor-token").await.unwrap();
            if secret.data.unwrap().get("authorization").map(|v| v.0.clone()) != Some(want.clone().into_bytes()) {
                return false;
            }
        }
        true
    })
    .await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 1, "the same token, recovered from the store");
    assert!(!h.cluster_events("vendor").await.iter().any(|(_, r)| r == "SecretTampered"), "a new template is no tampering");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_shorter_than_refresh_before_needs_is_reported_as_for_a_navigator_token() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 1).await;
    h.start_cluster_operator().await;
    // Asks for 30m with refreshBefore 10m; the stand-in grants 10m.
    let mut spec = selecting(&label);
    support::merge(&mut spec, json!({"validity": "30m", "refreshBefore": "10m"}));
    h.create_cluster_token("capped", spec).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "capped", "True", "TokenValid").await;
    // The Ready message says so, as a NavigatorToken's does.
    let status = h.cluster_status("capped").await.unwrap();
    assert_eq!(status.token.granted_lifetime.as_deref(), Some("10m"));
    let ready = status.token.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("spec.refreshBefore 10m is more than half the 10m the endpoint granted"), "{}", ready.message);
    assert!(h.cluster_has_event("capped", "Warning", "RefreshBeforeNotHonoured").await, "{:?}", h.cluster_events("capped").await);
    let warnings = h.cluster_events("capped").await.into_iter().filter(|(_, reason)| reason == "RefreshBeforeNotHonoured").count();
    assert_eq!(warnings, 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_namespaces_that_do_not_exist_are_reported_without_warnings() {
    let mut h = Harness::new(LONG).await;
    let present = unique_namespace();
    h.create_namespace(&present, &[]).await;
    let absent = unique_namespace();
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", json!({"target": {"secretName": "vendor-token", "namespaces": [present, absent]}})).await;
    h.wait_until("the missing namespace in status", WAIT, || async {
        h.cluster_status("vendor").await.is_some_and(|s| s.missing_namespaces == [absent.clone()])
    })
    .await;
    let status = h.cluster_status("vendor").await.unwrap();
    assert_eq!(status.namespaces.map(|c| (c.selected, c.written, c.missing)), Some((1, 1, 1)));
    assert!(h.cluster_events("vendor").await.iter().all(|(kind, _)| kind != "Warning"), "no Warning for a namespace not created yet");

    // Created later: it gets the token, and status stops naming it.
    h.create_namespace(&absent, &[]).await;
    all_hold(&h, &[present, absent], 1).await;
    h.wait_until("nothing missing", WAIT, || async {
        h.cluster_status("vendor").await.is_some_and(|s| s.missing_namespaces.is_empty() && s.namespaces.is_some_and(|c| c.missing == 0))
    })
    .await;
    h.finish().await;
}

/// Asks for a new token at once, as `kubectl nvt renew` does.
async fn force_refresh(h: &Harness, name: &str, stamp: &str) {
    let patch = json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": stamp}}});
    h.cluster_tokens().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_valid_token_everywhere_and_recovers_as_for_a_navigator_token() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 2).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;

    h.tokens.set_default(Some(Scripted::status(503, "text/html", "<html>maintenance</html>")));
    force_refresh(&h, "vendor", "1").await;
    wait_ready(&h, "vendor", "True", "RefreshFailing").await;
    let status = h.cluster_status("vendor").await.unwrap().token;
    assert_eq!(status.last_failure.map(|f| f.reason).as_deref(), Some("UpstreamUnavailable"));
    assert!(status.consecutive_failures >= 1);
    all_hold(&h, &namespaces, 1).await;
    assert!(h.cluster_has_event("vendor", "Warning", "UpstreamUnavailable").await, "{:?}", h.cluster_events("vendor").await);

    h.tokens.set_default(None);
    force_refresh(&h, "vendor", "2").await; // a change retries at once, whatever the backoff
    all_hold(&h, &namespaces, 2).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.cluster_status("vendor").await.unwrap().token.consecutive_failures, 0);
    h.wait_until("the Recovered Event", WAIT, || h.cluster_has_event("vendor", "Normal", "Recovered")).await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_wait_for_a_change_as_for_a_navigator_token() {
    let mut h = Harness::new(LONG).await;
    h.tokens.set_credentials("testkit-client", "the-real-secret");
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 1).await;
    h.start_cluster_operator().await;
    let mut spec = selecting(&label);
    support::merge(&mut spec, json!({"endpoint": {"type": "Navigator"}}));
    h.create_cluster_token("vendor", spec).await;
    wait_ready(&h, "vendor", "False", "Unauthorized").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.tokens.request_count(), 1, "credential errors wait for a change");
    assert!(h.cluster_has_event("vendor", "Warning", "Unauthorized").await, "{:?}", h.cluster_events("vendor").await);

    h.put_credentials("testkit-client", "the-real-secret").await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 2);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_cluster_token_requests_nothing_and_says_so() {
    let mut h = Harness::new(LONG).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 1).await;
    h.start_cluster_operator().await;
    let mut spec = selecting(&label);
    support::merge(&mut spec, json!({"suspend": true}));
    h.create_cluster_token("vendor", spec).await;
    wait_ready(&h, "vendor", "False", "Suspended").await;
    let (_, _, message) = h.cluster_ready("vendor").await.unwrap();
    assert_eq!(message, "refreshing is suspended and the Secrets hold no valid token");
    assert_eq!(h.tokens.request_count(), 0);
    assert!(h.token_in(&namespaces[0], "vendor-token").await.is_none());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_false_when_the_shared_token_expires_during_a_long_retry_after() {
    let mut h = Harness::new(Duration::from_secs(6)).await;
    let label = h.ns.clone();
    let namespaces = tenants(&h, &label, 1).await;
    h.start_cluster_operator().await;
    h.create_cluster_token("vendor", selecting(&label)).await;
    all_hold(&h, &namespaces, 1).await;
    wait_ready(&h, "vendor", "True", "TokenValid").await;
    let expires_at: jiff::Timestamp = h.cluster_status("vendor").await.unwrap().token.expires_at.unwrap().parse().unwrap();
    // Every refresh is told to come back in a minute: long after this token expires.
    h.tokens.set_default(Some(Scripted::Status {
        code: 429,
        body: r#"{"cspErrorCode":"rate_limited","message":"slow down","requestId":"rq-1"}"#.into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), "60".into())],
    }));
    wait_ready(&h, "vendor", "True", "RefreshFailing").await;
    h.wait_until("Ready=False once the token has expired", WAIT, || async {
        h.cluster_ready("vendor").await.is_some_and(|(status, _, _)| status == "False")
    })
    .await;
    assert!(jiff::Timestamp::now() >= expires_at, "Ready turned False before the token expired");
    let status = h.cluster_status("vendor").await.unwrap().token;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "RateLimited");
    assert!(ready.message.contains("expired at"), "{}", ready.message);
    assert_eq!(status.expires_at, None, "status no longer describes an expired token as current");
    assert_eq!(h.tokens.request_count(), 2, "the Retry-After is still honoured");
    h.wait_until("a TokenExpired Event", WAIT, || h.cluster_has_event("vendor", "Warning", "TokenExpired")).await;
    h.finish().await;
}
