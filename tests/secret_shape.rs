//! The Secret in its consumers' shape: keys rendered from templates, the Secret type, and
//! workloads restarted after each new token.

mod support;

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::Harness;

/// Long enough that no refresh falls inside a test.
const LONG: Duration = Duration::from_secs(600);

async fn data(h: &Harness, secret: &str, key: &str) -> Option<String> {
    h.secret_token(secret, key).await
}

async fn force_refresh(h: &Harness, name: &str, stamp: &str) {
    h.patch_token(name, json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": stamp}}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_render_into_the_secret_and_a_template_change_costs_no_token() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    let template = json!({"data": {
        "authorization": "{{ tokenType }} {{ accessToken }}",
        "config.json": r#"{"token": {{ accessToken | tojson }}, "expires": {{ expiresAtUnix }}, "org": {{ orgId | tojson }} }"#,
    }});
    h.create_token("shaped", json!({"target": {"template": template}})).await;
    h.wait_for_token_in_secret("shaped", 1).await;
    h.wait_for_ready("shaped", "True", "TokenValid").await;
    let issued = h.tokens.issued().remove(0);
    assert_eq!(data(&h, "shaped", "authorization").await.unwrap(), format!("Bearer {}", issued.access_token));
    let config: Value = serde_json::from_str(&data(&h, "shaped", "config.json").await.unwrap()).unwrap();
    assert_eq!(config["token"], issued.access_token.as_str());
    assert_eq!(config["expires"], issued.exp);
    assert_eq!(config["org"], support::ORG);

    // A new template is a rewrite with the same token.
    // (A merge patch: null removes the key.)
    let changed = json!({"data": {"authorization": "Bearer {{ accessToken }}", "config.json": null, "header": "Authorization: Bearer {{ accessToken }}"}});
    h.patch_token("shaped", json!({"spec": {"target": {"template": changed}}})).await;
    h.wait_until("the new template rendered", Duration::from_secs(20), || async {
        data(&h, "shaped", "header").await == Some(format!("Authorization: Bearer {}", issued.access_token))
    })
    .await;
    assert_eq!(data(&h, "shaped", "config.json").await, None, "a key dropped from the template is removed");
    assert_eq!(h.tokens.request_count(), 1);

    // An edited rendered key is repaired, still with the same token.
    let edit = json!({"stringData": {"header": "tampered"}});
    h.secrets().patch("shaped", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    h.wait_until("the edited key repaired", Duration::from_secs(20), || async {
        data(&h, "shaped", "header").await.is_some_and(|v| v != "tampered")
    })
    .await;
    assert_eq!(h.tokens.request_count(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_template_is_reported_with_its_key_and_position_and_the_secret_stays() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("tpl", json!({"target": {"template": {"data": {"header": "Bearer {{ accessToken }}"}}}})).await;
    h.wait_for_token_in_secret("tpl", 1).await;
    let before = h.secrets().get("tpl").await.unwrap().data;

    let broken = json!({"data": {"header": "Bearer {{ accessToken }}", "cfg": "line one\n{{ acessToken }}"}});
    h.patch_token("tpl", json!({"spec": {"target": {"template": broken}}})).await;
    h.wait_for_ready("tpl", "False", "InvalidTemplate").await;
    let message = h.token("tpl").await.status.unwrap().last_failure.unwrap().message;
    assert!(message.contains("spec.target.template.data[cfg]") && message.contains("line 2, column 4"), "{message}");
    assert!(h.has_event("tpl", "Warning", "InvalidTemplate").await);
    assert_eq!(h.secrets().get("tpl").await.unwrap().data, before, "the Secret is left as it is");
    assert_eq!(h.tokens.request_count(), 1, "a template that cannot work costs no token");

    let fixed = json!({"data": {"header": "Bearer {{ accessToken }}", "cfg": "{{ accessToken }}"}});
    h.patch_token("tpl", json!({"spec": {"target": {"template": fixed}}})).await;
    h.wait_for_ready("tpl", "True", "TokenValid").await;
    assert!(data(&h, "tpl", "cfg").await.is_some());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_type_that_the_existing_secret_cannot_take_is_reported() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    // An Opaque Secret of the operator's, left behind (Retain) by an earlier NavigatorToken.
    h.create_token("registry", json!({"target": {"deletionPolicy": "Retain"}})).await;
    h.wait_for_token_in_secret("registry", 1).await;
    h.delete_token("registry").await;
    h.wait_until("the NavigatorToken gone", Duration::from_secs(10), || async {
        h.navigator_tokens().get_opt("registry").await.unwrap().is_none()
    })
    .await;

    let docker = r#"{"auths": {"registry.example.com": {"username": "oauth2", "password": {{ accessToken | tojson }} } } }"#;
    let template = json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": docker}});
    h.create_token("registry", json!({"target": {"template": template}})).await;
    // The retained token is still valid: Ready stays True while the rewrite is refused.
    h.wait_for_ready("registry", "True", "RefreshFailing").await;
    let failure = h.token("registry").await.status.unwrap().last_failure.unwrap();
    assert_eq!(failure.reason, "SecretInvalid");
    assert!(failure.message.contains("another type") && failure.message.contains("Delete it"), "{}", failure.message);

    h.secrets().delete("registry", &DeleteParams::default()).await.unwrap();
    h.wait_until("recreated with the new type", Duration::from_secs(20), || async {
        h.secrets().get_opt("registry").await.unwrap().and_then(|s| s.type_).as_deref() == Some("kubernetes.io/dockerconfigjson")
    })
    .await;
    h.wait_for_ready("registry", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 2, "one token for the new Secret once the old one is gone");
    h.finish().await;
}

fn deployment(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
        }},
    })
}

fn restarted_at(h: &Harness, name: &str) -> Option<String> {
    let object = h.api.as_ref()?.get("apps/v1", "deployments", Some(&h.ns), name)?;
    object["spec"]["template"]["metadata"]["annotations"]["navigator.dev/restarted-at"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_targets_are_patched_once_per_new_token_and_never_for_metadata() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    api.insert(deployment(&h.ns, "reads-env"));
    h.start_operator();
    h.create_token("rolling", json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "reads-env"}]})).await;
    h.wait_for_token_in_secret("rolling", 1).await;
    h.wait_until("restarted", Duration::from_secs(20), || async { restarted_at(&h, "reads-env").is_some() }).await;
    let first = h.token("rolling").await.status.unwrap();
    assert_eq!(restarted_at(&h, "reads-env"), first.issued_at);
    let condition = first.conditions.iter().find(|c| c.type_ == "RolloutsRestarted").expect("a RolloutsRestarted condition");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "Restarted"));
    assert_eq!(h.api_counts().get("patch", "deployments"), 1);

    // A metadata-only rewrite of the Secret: no restart.
    h.patch_token("rolling", json!({"spec": {"target": {"labels": {"team": "a"}}}})).await;
    h.wait_until("relabelled", Duration::from_secs(20), || async {
        h.secrets().get("rolling").await.unwrap().metadata.labels.unwrap().contains_key("team")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.api_counts().get("patch", "deployments"), 1, "no restart without a new token");

    force_refresh(&h, "rolling", "1").await;
    h.wait_for_token_in_secret("rolling", 2).await;
    h.wait_until("restarted again", Duration::from_secs(20), || async { h.api_counts().get("patch", "deployments") == 2 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.api_counts().get("patch", "deployments"), 2, "one patch per target per new token");
    assert_eq!(restarted_at(&h, "reads-env"), h.token("rolling").await.status.unwrap().issued_at);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_forbidden_rollout_targets_are_reported_and_never_block_the_token() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    api.insert(deployment(&h.ns, "present"));
    h.start_operator();
    h.create_token("missing", json!({"rolloutRestartTargets": [{"kind": "StatefulSet", "name": "absent"}]})).await;
    h.wait_for_token_in_secret("missing", 1).await;
    h.wait_for_ready("missing", "True", "TokenValid").await;
    let status = h.token("missing").await.status.unwrap();
    let condition = status.conditions.iter().find(|c| c.type_ == "RolloutsRestarted").unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "TargetNotFound"));
    assert!(condition.message.contains("StatefulSet absent"), "{}", condition.message);
    assert!(h.has_event("missing", "Warning", "RolloutTargetNotFound").await);

    // The base install has no permission to patch workloads.
    api.forbid("patch", "deployments");
    h.create_token(
        "denied",
        json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "present"}], "target": {"secretName": "denied-token"}}),
    )
    .await;
    h.wait_for_ready("denied", "True", "TokenValid").await;
    let status = h.token("denied").await.status.unwrap();
    let condition = status.conditions.iter().find(|c| c.type_ == "RolloutsRestarted").unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "Forbidden"));
    assert!(condition.message.contains("deploy/components/rollout-restart"), "{}", condition.message);
    assert!(h.has_event("denied", "Warning", "RolloutForbidden").await);
    assert_eq!(restarted_at(&h, "present"), None);
    h.finish().await;
}

/// The issue time the Secret records (the token the workloads should run with).
async fn secret_issued_at(h: &Harness, name: &str) -> Option<String> {
    h.secrets().get_opt(name).await.unwrap()?.metadata.annotations?.get("navigator.dev/issued-at").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_owed_when_the_operator_crashed_is_replayed_once_and_never_twice() {
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    api.insert(deployment(&h.ns, "reads-env"));
    h.start_operator();
    h.create_token("rolling", json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "reads-env"}]})).await;
    h.wait_until("restarted for the first token", Duration::from_secs(20), || async { restarted_at(&h, "reads-env").is_some() }).await;

    // A new token reaches the Secret, but neither the patch nor the status write gets through
    // before the operator dies.
    api.forbid("patch", "deployments");
    api.forbid("patch", "navigatortokens/status");
    // Issue times have whole seconds: the new token's must differ from the first one's.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    force_refresh(&h, "rolling", "1").await;
    h.wait_for_token_in_secret("rolling", 2).await;
    h.crash_operator().await;
    let second = secret_issued_at(&h, "rolling").await.unwrap();
    assert_ne!(restarted_at(&h, "reads-env").as_deref(), Some(second.as_str()), "not restarted for the new token yet");

    api.allow_all();
    h.start_operator();
    h.wait_until("restarted for the new token", Duration::from_secs(20), || async {
        restarted_at(&h, "reads-env").as_deref() == Some(second.as_str())
    })
    .await;
    h.wait_until("status records it", Duration::from_secs(20), || async {
        let status = h.token("rolling").await.status.unwrap_or_default();
        status.conditions.iter().any(|c| c.type_ == "RolloutsRestarted" && c.status == "True" && c.message.ends_with(&second))
    })
    .await;
    assert_eq!(h.api_counts().get("patch", "deployments"), 1, "replayed once");
    assert_eq!(h.tokens.request_count(), 2, "no token request for a replay");

    // Done for this token: another restart of the operator restarts nothing.
    h.stop_operator().await;
    h.start_operator();
    h.wait_synced().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.api_counts().get("patch", "deployments"), 0, "never twice for the same token");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_patch_that_fails_transiently_is_retried_until_done() {
    use testkit::apiserver::{Fault, FaultKind};
    let mut h = Harness::new(LONG).await;
    let Some(api) = h.api.clone() else { return h.finish().await };
    api.insert(deployment(&h.ns, "reads-env"));
    // A 500 (kube itself retries 429, 503 and 504).
    api.inject(Fault::new(Some("patch"), Some("deployments"), FaultKind::Status(500), 1));
    h.start_operator();
    h.create_token("rolling", json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "reads-env"}]})).await;
    h.wait_for_token_in_secret("rolling", 1).await;
    h.wait_until("the failure in status", Duration::from_secs(20), || async {
        let status = h.token("rolling").await.status.unwrap_or_default();
        status.conditions.iter().any(|c| c.type_ == "RolloutsRestarted" && c.reason == "RolloutRestartFailed")
    })
    .await;
    assert_eq!(restarted_at(&h, "reads-env"), None);
    // The first replay comes 30 s after the failure.
    let issued_at = secret_issued_at(&h, "rolling").await;
    h.wait_until("restarted on a retry", Duration::from_secs(45), || async { restarted_at(&h, "reads-env") == issued_at }).await;
    assert_eq!(h.api_counts().get("patch", "deployments"), 2);
    assert_eq!(h.tokens.request_count(), 1);
    h.finish().await;
}
