//! The kubectl plugin (`kubectl nvt status|renew|inspect`), run as a user would against the
//! test API server, through the binary's `nvt` subcommand and as `kubectl-nvt`.

use std::path::PathBuf;
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use navigator_token_operator::controller::secret::{TokenMaterial, TokenTimes, desired, fingerprint};
use navigator_token_operator::crd::{ClusterNavigatorToken, NavigatorToken};
use navigator_token_operator::redact::Sensitive;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");
const TOKENS: &str = "navigator.dev/v1alpha1";
const REFRESH: &str = "navigator.dev/refresh-requested-at";
const CLUSTER_TOKEN_LABEL: &str = "navigator.dev/cluster-token";
/// The claims of the tokens these tests store: `iat` 2026-11-29T04:00:00Z, `exp` 30 minutes later.
const IAT: i64 = 1_795_924_800;
const EXP: i64 = IAT + 1800;

/// A test API server and a kubeconfig for it whose current context's namespace is `team-a`
/// (and another context's `team-b`).
struct Cluster {
    api: ApiServer,
    dir: PathBuf,
}

impl Cluster {
    async fn start(test: &str) -> Cluster {
        let api = ApiServer::start().await;
        for namespace in ["team-a", "team-b"] {
            api.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
        }
        let dir = std::env::temp_dir().join(format!("nvt-plugin-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The current context `t` in team-a, and a context `b` in team-b.
        let contexts =
            "{name: t, context: {cluster: t, user: t, namespace: team-a}}, {name: b, context: {cluster: t, user: t, namespace: team-b}}";
        let kubeconfig = api.kubeconfig().replace("{name: t, context: {cluster: t, user: t}}", contexts);
        assert!(kubeconfig.contains("namespace: team-a"), "the test kubeconfig changed shape: {kubeconfig}");
        std::fs::write(dir.join("kubeconfig"), kubeconfig).unwrap();
        Cluster { api, dir }
    }

    /// Runs `program args` with this cluster's kubeconfig and no in-cluster configuration.
    async fn run_program(&self, program: &std::path::Path, args: &[&str]) -> Output {
        tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_BACKTRACE")
            .output()
            .await
            .unwrap()
    }

    /// `navigator-token-operator nvt ARGS`.
    async fn nvt(&self, args: &[&str]) -> Output {
        let args: Vec<&str> = ["nvt"].iter().chain(args).copied().collect();
        self.run_program(BIN.as_ref(), &args).await
    }

    /// Stores a NavigatorToken with labels and status; returns it as the server stored it.
    fn token(&self, namespace: &str, name: &str, labels: Value, status: Value) -> NavigatorToken {
        let stored = self.api.insert(json!({
            "apiVersion": TOKENS, "kind": "NavigatorToken",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": {REFRESH: "before"}},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"}},
            "status": status,
        }));
        serde_json::from_value(stored).unwrap()
    }

    /// Stores the Secret the operator would write for `token`, holding `access_token`.
    fn secret(&self, token: &NavigatorToken, access_token: &str) -> Value {
        let issued_at = Timestamp::from_second(IAT).unwrap();
        let material = TokenMaterial {
            access_token: Sensitive::new(access_token),
            id_token: None,
            times: TokenTimes { issued_at, expires_at: Timestamp::from_second(EXP).unwrap() },
        };
        let secret = desired(token, &material, &fingerprint(b"inputs")).unwrap();
        self.api.insert(serde_json::to_value(secret).unwrap())
    }

    /// Stores a ClusterNavigatorToken with labels, target and status; returns it as stored.
    fn cluster_token(&self, name: &str, labels: Value, target: Value, status: Value) -> ClusterNavigatorToken {
        let stored = self.api.insert(json!({
            "apiVersion": TOKENS, "kind": "ClusterNavigatorToken",
            "metadata": {"name": name, "labels": labels, "annotations": {REFRESH: "before"}},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "target": target,
                     "credentialsSecretRef": {"namespace": "ops", "name": "creds"}},
            "status": status,
        }));
        serde_json::from_value(stored).unwrap()
    }

    /// Stores the Secret the operator would write for `cnvt` in `namespace` (with its label).
    fn cluster_secret(&self, cnvt: &ClusterNavigatorToken, namespace: &str, access_token: &str) -> Value {
        let mut secret = self.secret(&cnvt.view_in(namespace), access_token);
        secret["metadata"]["labels"][CLUSTER_TOKEN_LABEL] = json!(cnvt.metadata.name);
        self.api.insert(secret)
    }

    fn cluster_refresh_requested_at(&self, name: &str) -> String {
        let token = self.api.get(TOKENS, "clusternavigatortokens", None, name).unwrap();
        token["metadata"]["annotations"][REFRESH].as_str().unwrap().to_owned()
    }

    fn refresh_requested_at(&self, namespace: &str, name: &str) -> String {
        let token = self.api.get(TOKENS, "navigatortokens", Some(namespace), name).unwrap();
        token["metadata"]["annotations"][REFRESH].as_str().unwrap().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JWT with realistic claims (not signed: the plugin only decodes it).
fn jwt(secret_part: &str) -> String {
    let claims = json!({
        "iss": "https://gaz.csp-vidm-prod.com", "sub": "vmware.com:robot-1", "azp": "testkit-client",
        "context_name": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "iat": IAT, "exp": EXP, "acct": "robot@example.com",
    });
    format!("eyJhbGciOiJSUzI1NiJ9.{}.{secret_part}", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn ready_status() -> Value {
    json!({
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "TokenValid", "message": "Token valid until 2026-11-29T04:30:00Z",
             "lastTransitionTime": "2026-11-29T04:00:00Z"},
            {"type": "RolloutsRestarted", "status": "True", "reason": "Restarted", "message": "Restarted Deployment api",
             "lastTransitionTime": "2026-11-29T04:00:01Z"},
        ],
        "secretName": "ready", "issuedAt": "2026-11-29T04:00:00Z", "expiresAt": "2026-11-29T04:30:00Z",
        "nextRefreshAt": "2026-11-29T04:20:00Z", "grantedLifetime": "30m",
    })
}

/// The value of the line labelled `label` (the first one), trimmed.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}:");
    let line = text.lines().find(|l| l.trim_start().starts_with(&prefix)).unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    line.trim_start()[prefix.len()..].trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_ready_token_shows_its_schedule_and_an_intact_secret_but_not_the_token() {
    let cluster = Cluster::start("status-ready").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status());
    let access_token = jwt("ready-token-signature");
    cluster.secret(&token, &access_token);

    // No -n: the namespace is the kubeconfig context's.
    let text = stdout(&cluster.nvt(&["status", "ready"]).await);
    assert_eq!(field(&text, "NavigatorToken"), "team-a/ready");
    assert!(field(&text, "Ready").starts_with("True (TokenValid) since 2026-11-29T04:00:00Z ("), "{text}");
    assert_eq!(field(&text, "Message"), "Token valid until 2026-11-29T04:30:00Z");
    assert_eq!(field(&text, "Last failure"), "none");
    assert!(field(&text, "Next refresh").starts_with("2026-11-29T04:20:00Z ("), "{text}");
    assert!(field(&text, "Expires").starts_with("2026-11-29T04:30:00Z ("), "{text}");
    assert_eq!(field(&text, "Granted lifetime"), "30m");
    assert!(field(&text, "RolloutsRestarted").starts_with("True (Restarted) since 2026-11-29T04:00:01Z"), "{text}");
    assert_eq!(field(&text, "Secret"), "team-a/ready");
    assert_eq!((field(&text, "Exists"), field(&text, "Managed")), ("yes", "yes"));
    assert!(field(&text, "Expires at").starts_with("2026-11-29T04:30:00Z ("), "{text}");
    assert_eq!(field(&text, "Token"), r#"key "token" matches navigator.dev/token-sha256"#);
    assert!(!text.contains("ready-token-signature") && !text.contains(&access_token), "a token was printed:\n{text}");
    assert!(!text.contains("API token") && !text.contains("CredentialsExpiring"), "client credentials have no API token:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_failing_token_shows_the_failure_and_a_secret_edited_by_hand() {
    let cluster = Cluster::start("status-failing").await;
    let failing = json!({
        "conditions": [{"type": "Ready", "status": "False", "reason": "Unauthorized",
                        "message": "HTTP 401 from the token endpoint: check the client secret", "lastTransitionTime": "2026-11-29T04:40:00Z"}],
        "lastFailure": {"time": "2026-11-29T04:45:00Z", "reason": "Unauthorized", "message": "HTTP 401 from the token endpoint"},
        "consecutiveFailures": 4, "nextRefreshAt": "2026-11-29T04:50:00Z",
    });
    let token = cluster.token("team-b", "failing", json!({}), failing);
    let mut secret = cluster.secret(&token, &jwt("old-token"));
    secret["data"]["token"] = json!(base64::engine::general_purpose::STANDARD.encode("pasted-by-hand"));
    cluster.api.insert(secret);

    let text = stdout(&cluster.nvt(&["status", "failing", "-n", "team-b"]).await);
    assert_eq!(field(&text, "NavigatorToken"), "team-b/failing");
    assert!(field(&text, "Ready").starts_with("False (Unauthorized) since 2026-11-29T04:40:00Z"), "{text}");
    assert!(field(&text, "Last failure").starts_with("Unauthorized 2026-11-29T04:45:00Z ("), "{text}");
    assert!(text.contains("HTTP 401 from the token endpoint\n"), "{text}");
    assert_eq!(field(&text, "Consecutive failures"), "4");
    assert_eq!(field(&text, "Expires"), "-");
    assert!(!text.contains("RolloutsRestarted"), "no such condition, no line:\n{text}");
    assert_eq!(field(&text, "Token"), r#"key "token" does NOT match navigator.dev/token-sha256 (edited by someone else?)"#);
    assert!(!text.contains("pasted-by-hand"), "{text}");

    // Without its Secret, status says so; a NavigatorToken that does not exist is an error.
    // (--context: the namespace of that context.)
    cluster.api.remove("v1", "secrets", Some("team-b"), "failing");
    let text = stdout(&cluster.nvt(&["status", "failing", "--context", "b"]).await);
    assert_eq!(field(&text, "Exists"), "no");
    let error = stderr(&cluster.nvt(&["status", "failing"]).await);
    assert_eq!(error.trim(), r#"error: NavigatorToken "failing" not found in namespace "team-a""#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_when_an_api_token_itself_expires_and_the_warning() {
    let cluster = Cluster::start("status-api-token").await;
    let mut status = ready_status();
    status["conditions"].as_array_mut().unwrap().push(json!({
        "type": "CredentialsExpiring", "status": "True", "reason": "APITokenExpiringSoon",
        "message": "the CSP API token in Secret creds expires at 2026-12-20T00:00:00Z", "lastTransitionTime": "2026-11-29T04:00:02Z",
    }));
    status["credentials"] = json!({"apiTokenExpiresAt": "2026-12-20T00:00:00Z", "apiTokenCheckedAt": "2026-11-29T04:00:02Z"});
    let token = cluster.token("team-a", "ready", json!({}), status);
    cluster.secret(&token, &jwt("api-token-access-token"));
    let text = stdout(&cluster.nvt(&["status", "ready"]).await);
    assert!(field(&text, "API token expires").starts_with("2026-12-20T00:00:00Z ("), "{text}");
    assert!(field(&text, "Checked").starts_with("2026-11-29T04:00:02Z ("), "{text}");
    assert!(field(&text, "CredentialsExpiring").starts_with("True (APITokenExpiringSoon) since 2026-11-29T04:00:02Z"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_sets_the_refresh_annotation_on_exactly_the_named_or_selected_tokens() {
    let cluster = Cluster::start("renew").await;
    let objects = [("team-a", "one", "gold"), ("team-a", "two", "gold"), ("team-a", "three", "silver"), ("team-b", "four", "gold")];
    for (namespace, name, tier) in objects {
        cluster.token(namespace, name, json!({"tier": tier}), json!({}));
    }
    let renewed = |cluster: &Cluster| -> Vec<&str> {
        objects.iter().filter(|(ns, name, _)| cluster.refresh_requested_at(ns, name) != "before").map(|(_, name, _)| *name).collect()
    };

    let text = stdout(&cluster.nvt(&["renew", "two"]).await);
    assert_eq!(renewed(&cluster), ["two"]);
    let value = cluster.refresh_requested_at("team-a", "two");
    value.parse::<Timestamp>().unwrap_or_else(|e| panic!("not RFC 3339: {value:?}: {e}"));
    assert_eq!(text, format!("Requested a new token for NavigatorToken team-a/two ({REFRESH}={value})\n"));

    // --all with a selector: the context's namespace only.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster), ["one", "two"]);
    assert_ne!(cluster.refresh_requested_at("team-a", "two"), value, "a second renewal sets a new value");
    assert_eq!(text.lines().count(), 2, "{text}");

    // -A: every namespace.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-A", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster), ["one", "two", "four"]);
    assert!(text.contains("team-b/four") && !text.contains("three"), "{text}");

    // Nothing selected: said, and nothing changes.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-n", "team-b", "-l", "tier=silver"]).await);
    assert_eq!(text, "No NavigatorTokens to renew in namespace \"team-b\"\n");
    assert_eq!(renewed(&cluster), ["one", "two", "four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_refuses_a_name_with_all_neither_and_an_unknown_name() {
    let cluster = Cluster::start("renew-errors").await;
    cluster.token("team-a", "one", json!({}), json!({}));

    let both = cluster.nvt(&["renew", "one", "--all"]).await;
    assert_eq!(both.status.code(), Some(2));
    assert!(stderr(&both).contains("cannot be used with"), "{}", stderr(&both));
    let neither = cluster.nvt(&["renew"]).await;
    assert_eq!(neither.status.code(), Some(2));
    assert!(stderr(&neither).contains("required arguments were not provided"), "{}", stderr(&neither));
    let unknown = stderr(&cluster.nvt(&["renew", "nope"]).await);
    assert_eq!(unknown.trim(), r#"error: NavigatorToken "nope" not found in namespace "team-a""#);
    assert_eq!(cluster.refresh_requested_at("team-a", "one"), "before");

    // A renewal made before an error is still reported.
    let partly = cluster.nvt(&["renew", "one", "nope"]).await;
    assert_eq!(stderr(&partly).trim(), r#"error: NavigatorToken "nope" not found in namespace "team-a""#);
    let value = cluster.refresh_requested_at("team-a", "one");
    assert_ne!(value, "before");
    assert_eq!(
        String::from_utf8_lossy(&partly.stdout),
        format!("Requested a new token for NavigatorToken team-a/one ({REFRESH}={value})\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_claims_and_annotations_and_the_token_only_with_show_token() {
    let cluster = Cluster::start("inspect").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status());
    let access_token = jwt("inspected-signature");
    cluster.secret(&token, &access_token);

    let text = stdout(&cluster.nvt(&["inspect", "ready"]).await);
    assert_eq!(field(&text, "Secret"), "team-a/ready (key token)");
    assert!(field(&text, "Issued at").starts_with("2026-11-29T04:00:00Z ("), "{text}");
    assert!(field(&text, "Expires at").starts_with("2026-11-29T04:30:00Z (") && text.contains("[navigator.dev/expires-at]"), "{text}");
    assert_eq!(field(&text, "iss"), "https://gaz.csp-vidm-prod.com");
    assert_eq!(field(&text, "sub"), "vmware.com:robot-1");
    assert_eq!(field(&text, "azp"), "testkit-client");
    assert_eq!(field(&text, "context_name"), "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4");
    assert!(field(&text, "iat").starts_with(&format!("{IAT} = 2026-11-29T04:00:00Z (")), "{text}");
    assert!(field(&text, "exp").starts_with(&format!("{EXP} = 2026-11-29T04:30:00Z (")), "{text}");
    assert_eq!(field(&text, "acct"), "robot@example.com");
    let shown = text.contains(&access_token) || text.contains("inspected-signature") || text.contains("\nToken:");
    assert!(!shown, "the token without --show-token:\n{text}");

    let text = stdout(&cluster.nvt(&["inspect", "ready", "--show-token"]).await);
    assert_eq!(field(&text, "Token"), access_token);

    // A token that is not a JWT has no claims to show.
    let opaque = cluster.token("team-a", "opaque", json!({}), json!({}));
    cluster.secret(&opaque, "opaque-token-value");
    let text = stdout(&cluster.nvt(&["inspect", "opaque"]).await);
    assert_eq!(field(&text, "Claims"), "none: the token is not a JWT");
    assert!(!text.contains("opaque-token-value"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_missing_secret_the_rbac_denial_and_the_missing_kubeconfig() {
    let cluster = Cluster::start("errors").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status());

    let missing = stderr(&cluster.nvt(&["inspect", "ready"]).await);
    assert_eq!(
        missing.trim(),
        r#"error: Secret "ready" of NavigatorToken "ready" not found in namespace "team-a": no token has been written there yet; see why with: kubectl nvt status ready -n team-a"#
    );

    // A Secret of that name that someone else wrote, without the token key.
    cluster.api.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ready", "namespace": "team-a"},
                              "stringData": {"other": "x"}}));
    let no_key = stderr(&cluster.nvt(&["inspect", "ready"]).await);
    assert_eq!(no_key.trim(), r#"error: Secret team-a/ready has no key "token""#);
    let text = stdout(&cluster.nvt(&["status", "ready"]).await);
    assert!(field(&text, "Managed").starts_with("no (not labelled app.kubernetes.io/managed-by=navigator-token-operator"), "{text}");
    assert_eq!(field(&text, "Token"), r#"no key "token""#);

    cluster.secret(&token, &jwt("forbidden-signature"));
    cluster.api.forbid("get", "secrets");
    let denied = stderr(&cluster.nvt(&["inspect", "ready"]).await);
    assert!(denied.starts_with(r#"error: not allowed to get Secret "ready" in namespace "team-a": "#), "{denied}");
    assert!(denied.contains(r#"cannot get resource "secrets""#) && denied.contains("kubectl auth can-i get secrets -n team-a"), "{denied}");
    // status still shows the NavigatorToken, and why the Secret is not shown.
    let text = stdout(&cluster.nvt(&["status", "ready"]).await);
    assert_eq!(field(&text, "Ready").split(' ').next(), Some("True"));
    assert!(field(&text, "Readable").starts_with(r#"no: not allowed to get Secret "ready""#), "{text}");
    assert!(!text.contains("forbidden-signature"), "{text}");

    let mut no_config = tokio::process::Command::new(BIN);
    no_config.args(["nvt", "status", "ready"]).env("KUBECONFIG", cluster.dir.join("no-such-kubeconfig"));
    let output = no_config.env_remove("KUBERNETES_SERVICE_HOST").env_remove("RUST_BACKTRACE").output().await.unwrap();
    let error = stderr(&output);
    assert!(error.starts_with("error: no Kubernetes configuration (set KUBECONFIG") && error.contains("no-such-kubeconfig"), "{error}");
    let error = stderr(&cluster.nvt(&["status", "ready", "--context", "nope"]).await);
    assert!(error.starts_with(r#"error: cannot use the kubeconfig context "nope": "#), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_named_kubectl_nvt_is_the_plugin() {
    let cluster = Cluster::start("argv0").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status());
    cluster.secret(&token, &jwt("argv0-signature"));
    // As the README installs it: a symlink named kubectl-nvt.
    let plugin = cluster.dir.join("kubectl-nvt");
    std::os::unix::fs::symlink(BIN, &plugin).unwrap();

    let as_plugin = stdout(&cluster.run_program(&plugin, &["status", "ready"]).await);
    assert_eq!(field(&as_plugin, "NavigatorToken"), "team-a/ready");
    // Same screen as the subcommand, except the relative times, which may have moved on.
    let as_subcommand = stdout(&cluster.nvt(&["status", "ready"]).await);
    let labels = |text: &str| text.lines().map(|l| l.split(':').next().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(labels(&as_plugin), labels(&as_subcommand));
    let help = stdout(&cluster.run_program(&plugin, &["--help"]).await);
    assert!(help.contains("Usage: kubectl nvt"), "{help}");

    // Under its own name the binary has no `status` command: argv[0] is what decides.
    let own_name = cluster.run_program(BIN.as_ref(), &["status", "ready"]).await;
    assert!(stderr(&own_name).contains("unrecognized subcommand 'status'"), "{}", stderr(&own_name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_cluster_token_shows_its_namespaces_and_failures_without_reading_secrets() {
    let cluster = Cluster::start("cluster-status").await;
    let mut status = ready_status();
    status["conditions"] = json!([
        {"type": "Ready", "status": "False", "reason": "NamespacesFailing", "message": "2 of 5 namespaces hold no valid token in Secret vendor-token (team-a, a-tenant-namespace-with-a-long-name)",
         "lastTransitionTime": "2026-11-29T04:10:00Z"},
        {"type": "CredentialsExpiring", "status": "True", "reason": "APITokenExpiringSoon",
         "message": "the CSP API token in Secret ops/creds expires at 2026-12-20T00:00:00Z", "lastTransitionTime": "2026-11-29T04:00:02Z"},
    ]);
    status["credentials"] = json!({"apiTokenExpiresAt": "2026-12-20T00:00:00Z", "apiTokenCheckedAt": "2026-11-29T04:00:02Z"});
    status["namespaces"] = json!({"selected": 5, "written": 3, "failed": 2});
    status["namespaceFailures"] = json!([
        {"namespace": "team-a", "reason": "SecretConflict", "message": "Secret team-a/vendor-token already exists"},
        {"namespace": "a-tenant-namespace-with-a-long-name", "reason": "SecretQuotaExceeded", "message": "quota secrets exceeded"},
    ]);
    let cnvt =
        cluster.cluster_token("vendor", json!({}), json!({"namespaces": ["team-a", "team-b"], "secretName": "vendor-token"}), status);
    cluster.cluster_secret(&cnvt, "team-b", &jwt("cluster-status-signature"));
    // The Secrets are in tenant namespaces: status must not need them.
    cluster.api.forbid("get", "secrets");
    cluster.api.forbid("list", "secrets");

    let text = stdout(&cluster.nvt(&["status", "--cluster", "vendor"]).await);
    assert_eq!(field(&text, "ClusterNavigatorToken"), "vendor");
    assert!(field(&text, "Ready").starts_with("False (NamespacesFailing) since 2026-11-29T04:10:00Z ("), "{text}");
    assert_eq!(
        field(&text, "Message"),
        "2 of 5 namespaces hold no valid token in Secret vendor-token (team-a, a-tenant-namespace-with-a-long-name)"
    );
    assert_eq!(field(&text, "Last failure"), "none");
    assert!(field(&text, "Next refresh").starts_with("2026-11-29T04:20:00Z ("), "{text}");
    assert!(field(&text, "Expires").starts_with("2026-11-29T04:30:00Z ("), "{text}");
    assert_eq!(field(&text, "Granted lifetime"), "30m");
    assert!(field(&text, "API token expires").starts_with("2026-12-20T00:00:00Z ("), "{text}");
    assert!(field(&text, "CredentialsExpiring").starts_with("True (APITokenExpiringSoon)"), "{text}");
    assert_eq!(field(&text, "Secret"), "vendor-token in each selected namespace");
    assert_eq!((field(&text, "Selected"), field(&text, "Written"), field(&text, "Failed")), ("5", "3", "2"));
    assert_eq!(field(&text, "team-a"), "SecretConflict: Secret team-a/vendor-token already exists");
    assert_eq!(field(&text, "a-tenant-namespace-with-a-long-name"), "SecretQuotaExceeded: quota secrets exceeded");
    assert!(!text.contains("cluster-status-signature") && !text.contains("Readable") && !text.contains("Exists"), "{text}");

    // The flag decides the kind: without it, the name is a NavigatorToken's in the namespace.
    let error = stderr(&cluster.nvt(&["status", "vendor"]).await);
    assert_eq!(error.trim(), r#"error: NavigatorToken "vendor" not found in namespace "team-a""#);
    let error = stderr(&cluster.nvt(&["status", "--cluster", "nope"]).await);
    assert_eq!(error.trim(), r#"error: ClusterNavigatorToken "nope" not found"#);
    cluster.api.forbid("get", "clusternavigatortokens");
    let error = stderr(&cluster.nvt(&["status", "--cluster", "vendor"]).await);
    assert!(error.starts_with(r#"error: not allowed to get ClusterNavigatorToken "vendor": "#), "{error}");
    assert!(error.trim_end().ends_with("(check with: kubectl auth can-i get clusternavigatortokens)"), "{error}");

    // A new ClusterNavigatorToken, not yet seen by the operator.
    cluster.api.allow_all();
    cluster.cluster_token("fresh", json!({}), json!({"namespaces": ["team-a"]}), json!({}));
    let text = stdout(&cluster.nvt(&["status", "fresh", "--cluster"]).await);
    assert!(field(&text, "Ready").starts_with("unknown (no status yet"), "{text}");
    assert_eq!(field(&text, "Secret"), "fresh in each selected namespace");
    assert_eq!(field(&text, "Namespaces"), "unknown (no counts in the status yet)");
    assert!(!text.contains("Namespace failures") && !text.contains("API token"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_with_cluster_sets_the_annotation_on_exactly_the_named_or_selected_cluster_tokens() {
    let cluster = Cluster::start("cluster-renew").await;
    let target = json!({"namespaces": ["team-a"]});
    for (name, tier) in [("one", "gold"), ("two", "gold"), ("three", "silver")] {
        cluster.cluster_token(name, json!({"tier": tier}), target.clone(), json!({}));
    }
    // A NavigatorToken of the same name as a ClusterNavigatorToken is left alone.
    cluster.token("team-a", "one", json!({"tier": "gold"}), json!({}));
    let renewed = |cluster: &Cluster| -> Vec<&str> {
        ["one", "two", "three"].into_iter().filter(|name| cluster.cluster_refresh_requested_at(name) != "before").collect()
    };

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "one"]).await);
    assert_eq!(renewed(&cluster), ["one"]);
    assert_eq!(cluster.refresh_requested_at("team-a", "one"), "before");
    let value = cluster.cluster_refresh_requested_at("one");
    value.parse::<Timestamp>().unwrap_or_else(|e| panic!("not RFC 3339: {value:?}: {e}"));
    assert_eq!(text, format!("Requested a new token for ClusterNavigatorToken one ({REFRESH}={value})\n"));

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "--all", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster), ["one", "two"]);
    assert_ne!(cluster.cluster_refresh_requested_at("one"), value, "a second renewal sets a new value");
    assert_eq!(text.lines().count(), 2, "{text}");
    let text = stdout(&cluster.nvt(&["renew", "--all", "--cluster"]).await);
    assert_eq!(renewed(&cluster), ["one", "two", "three"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(cluster.refresh_requested_at("team-a", "one"), "before");

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "--all", "-l", "tier=bronze"]).await);
    assert_eq!(text, "No ClusterNavigatorTokens to renew\n");
    // -A means namespaces, which ClusterNavigatorTokens do not have.
    let all_namespaces = cluster.nvt(&["renew", "--cluster", "--all", "-A"]).await;
    assert_eq!(all_namespaces.status.code(), Some(2));
    assert!(stderr(&all_namespaces).contains("cannot be used with"), "{}", stderr(&all_namespaces));
    let unknown = stderr(&cluster.nvt(&["renew", "--cluster", "nope"]).await);
    assert_eq!(unknown.trim(), r#"error: ClusterNavigatorToken "nope" not found"#);
    cluster.api.forbid("list", "clusternavigatortokens");
    let denied = stderr(&cluster.nvt(&["renew", "--cluster", "--all"]).await);
    assert!(denied.starts_with("error: not allowed to list ClusterNavigatorTokens: "), "{denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_with_cluster_shows_the_token_in_the_given_namespace_only_if_written_for_it() {
    let cluster = Cluster::start("cluster-inspect").await;
    let target = json!({"namespaces": ["team-a", "team-b"], "secretName": "vendor-token", "accessTokenKey": "bearer"});
    let cnvt = cluster.cluster_token("vendor", json!({}), target, ready_status());
    let access_token = jwt("cluster-inspected-signature");
    cluster.cluster_secret(&cnvt, "team-b", &access_token);

    let text = stdout(&cluster.nvt(&["inspect", "--cluster", "vendor", "-n", "team-b"]).await);
    assert_eq!(field(&text, "Secret"), "team-b/vendor-token (key bearer)");
    assert!(field(&text, "Expires at").starts_with("2026-11-29T04:30:00Z ("), "{text}");
    assert_eq!(field(&text, "sub"), "vmware.com:robot-1");
    assert!(field(&text, "exp").starts_with(&format!("{EXP} = 2026-11-29T04:30:00Z (")), "{text}");
    assert!(!text.contains("cluster-inspected-signature") && !text.contains("\nToken:"), "{text}");
    let text = stdout(&cluster.nvt(&["inspect", "--cluster", "vendor", "-n", "team-b", "--show-token"]).await);
    assert_eq!(field(&text, "Token"), access_token);

    // No -n: the context's namespace (team-a), where there is no Secret yet.
    let missing = stderr(&cluster.nvt(&["inspect", "--cluster", "vendor"]).await);
    assert_eq!(
        missing.trim(),
        r#"error: Secret "vendor-token" of ClusterNavigatorToken "vendor" not found in namespace "team-a": no token has been written there yet; see why with: kubectl nvt status --cluster vendor"#
    );
    // A NavigatorToken's Secret of that name is not this ClusterNavigatorToken's: not shown.
    let other = cluster.token("team-a", "vendor-token", json!({}), json!({}));
    let mut secret = cluster.secret(&other, &jwt("someone-elses-signature"));
    secret["data"]["bearer"] = secret["data"]["token"].clone();
    cluster.api.insert(secret);
    let foreign = stderr(&cluster.nvt(&["inspect", "--cluster", "vendor", "-n", "team-a", "--show-token"]).await);
    assert_eq!(foreign.trim(), r#"error: Secret team-a/vendor-token was not written for ClusterNavigatorToken "vendor""#);
    assert!(!foreign.contains("someone-elses-signature"), "{foreign}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_is_not_used_for_a_loopback_api_server_as_with_kubectl() {
    let cluster = Cluster::start("proxy-env").await;
    cluster.token("team-a", "ready", json!({}), ready_status());
    // A "proxy" that takes connections and drops them: going through it fails the command.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let dropper = tokio::spawn(async move {
        while let Ok((connection, _)) = proxy.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(connection);
        }
    });
    // The test API server is plain http on 127.0.0.1: Go (and so kubectl) proxies neither.
    for (name, value) in [("HTTPS_PROXY", proxy_url.as_str()), ("HTTP_PROXY", proxy_url.as_str())] {
        let mut command = tokio::process::Command::new(BIN);
        command.args(["nvt", "status", "ready"]).env("KUBECONFIG", cluster.dir.join("kubeconfig")).env(name, value).env("NO_PROXY", "");
        let output = command.env_remove("KUBERNETES_SERVICE_HOST").env_remove("RUST_BACKTRACE").output().await.unwrap();
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert_eq!(field(&stdout(&output), "Ready").split(' ').next(), Some("True"));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing went through the proxy");
    dropper.abort();
}
