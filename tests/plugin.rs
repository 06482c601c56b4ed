//! The kubectl plugin (`kubectl nvt status|renew|inspect`), run as a user would against the
//! test API server (or the real one `NAVIGATOR_TEST_KUBECONFIG` names), through the binary's
//! `nvt` subcommand and as `kubectl-nvt`.

use std::path::PathBuf;
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use navigator_token_operator::controller::secret::{TokenMaterial, TokenTimes, desired, fingerprint};
use navigator_token_operator::crd::{ClusterNavigatorToken, NavigatorToken, Placement, TokenSettings};
use navigator_token_operator::redact::Sensitive;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions::is_crd_established};
use kube::{Client, Config, ResourceExt as _};
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");
const TOKENS: &str = "navigator.dev/v1alpha1";
const REFRESH: &str = "navigator.dev/refresh-requested-at";
const CLUSTER_TOKEN_LABEL: &str = "navigator.dev/cluster-token";
/// The claims of the tokens these tests store: `iat` 2026-11-29T04:00:00Z, `exp` 30 minutes later.
const IAT: i64 = 1_795_924_800;
const EXP: i64 = IAT + 1800;

/// An API server with the namespaces `team-a` and `team-b`, and a kubeconfig for it whose
/// current context's namespace is `team-a` (and another context's `team-b`): the test API server,
/// or the real one `NAVIGATOR_TEST_KUBECONFIG` names. On a real server the namespaces get a
/// suffix of this test's (tests share it), and the plugin's output is read with the suffix taken
/// out again; ClusterNavigatorTokens keep their names, so those tests run one at a time there.
struct Cluster {
    /// The test API server, if that is what runs.
    api: Option<ApiServer>,
    client: Client,
    dir: PathBuf,
    /// Appended to the namespaces' names ("" on the test API server).
    suffix: String,
    /// ClusterNavigatorTokens created, deleted at the end on a real server.
    cluster_tokens: std::sync::Mutex<Vec<String>>,
}

/// The namespaces the tests are written for.
const NAMESPACES: [&str; 2] = ["team-a", "team-b"];

impl Cluster {
    async fn start(test: &str) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("nvt-plugin-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (api, kubeconfig, suffix) = match std::env::var("NAVIGATOR_TEST_KUBECONFIG") {
            Ok(path) => (None, std::fs::read_to_string(path).unwrap(), format!("-{}-{test}", std::process::id())),
            Err(_) => {
                let api = ApiServer::start().await;
                let kubeconfig = api.kubeconfig();
                (Some(api), kubeconfig, String::new())
            }
        };
        // The current context `t` in team-a, and a context `b` in team-b.
        let mut kubeconfig: Value = serde_norway::from_str(&kubeconfig).unwrap();
        let current = kubeconfig["current-context"].clone();
        let context = kubeconfig["contexts"].as_array().unwrap().iter().find(|c| c["name"] == current).unwrap()["context"].clone();
        let in_namespace = |name: &str, namespace: &str| {
            let mut context = context.clone();
            context["namespace"] = json!(format!("{namespace}{suffix}"));
            json!({"name": name, "context": context})
        };
        kubeconfig["contexts"] = json!([in_namespace("t", "team-a"), in_namespace("b", "team-b")]);
        kubeconfig["current-context"] = json!("t");
        let kubeconfig_text = serde_norway::to_string(&kubeconfig).unwrap();
        std::fs::write(dir.join("kubeconfig"), &kubeconfig_text).unwrap();
        let config = Kubeconfig::from_yaml(&kubeconfig_text).unwrap();
        let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await.unwrap();
        let client = Client::try_from(config).unwrap();
        let cluster = Cluster { api, client, dir, suffix, cluster_tokens: Default::default() };
        // The test API server learns the status subresources from them; a real one serves the
        // kinds once they are established.
        navigator_token_operator::install_crd(&cluster.client).await.expect("install the CRDs");
        if cluster.api.is_none() {
            for crd in ["navigatortokens.navigator.dev", "clusternavigatortokens.navigator.dev"] {
                let established = await_condition(Api::<CustomResourceDefinition>::all(cluster.client.clone()), crd, is_crd_established());
                tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").unwrap();
            }
        }
        for namespace in NAMESPACES {
            cluster.store(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await;
        }
        cluster
    }

    /// `text` with this test's namespaces named as on the server.
    fn on_server(&self, text: &str) -> String {
        NAMESPACES.iter().fold(text.to_owned(), |text, ns| replace_word(&text, ns, &format!("{ns}{}", self.suffix)))
    }

    /// `text` from the server with this test's namespaces named as the tests know them.
    fn as_written(&self, text: &str) -> String {
        NAMESPACES.iter().fold(text.to_owned(), |text, ns| replace_word(&text, &format!("{ns}{}", self.suffix), ns))
    }

    /// Runs `program args` with this cluster's kubeconfig and no in-cluster configuration.
    async fn run_program(&self, program: &std::path::Path, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|arg| self.on_server(arg)).collect();
        let mut output = tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_BACKTRACE")
            .output()
            .await
            .unwrap();
        for stream in [&mut output.stdout, &mut output.stderr] {
            *stream = self.as_written(&String::from_utf8_lossy(stream)).into_bytes();
        }
        output
    }

    /// `navigator-token-operator nvt ARGS`.
    async fn nvt(&self, args: &[&str]) -> Output {
        let args: Vec<&str> = ["nvt"].iter().chain(args).copied().collect();
        self.run_program(BIN.as_ref(), &args).await
    }

    /// Creates `object` (its namespaces named as on the server) with its status, or replaces it
    /// if it exists; returns it as the server stored it.
    async fn store(&self, object: Value) -> Value {
        let mut object: Value = serde_json::from_str(&self.on_server(&object.to_string())).unwrap();
        let status = object.as_object_mut().unwrap().remove("status").filter(|s| s != &json!({}));
        let kind = object["kind"].as_str().unwrap().to_owned();
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => (group.to_owned(), version.to_owned()),
            None => (String::new(), object["apiVersion"].as_str().unwrap().to_owned()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        if kind == "ClusterNavigatorToken" {
            self.cluster_tokens.lock().unwrap().push(name.clone());
        }
        let mut dynamic: DynamicObject = serde_json::from_value(object).unwrap();
        // Stored again after a change: a create must not name a resourceVersion.
        dynamic.metadata.resource_version = None;
        let stored = match api.create(&PostParams::default(), &dynamic).await {
            Ok(stored) => stored,
            Err(kube::Error::Api(status)) if status.code == 409 && kind != "Namespace" => {
                dynamic.metadata.resource_version = api.get(&name).await.unwrap().metadata.resource_version;
                api.replace(&name, &PostParams::default(), &dynamic).await.unwrap()
            }
            Err(kube::Error::Api(status)) if status.code == 409 => api.get(&name).await.unwrap(),
            Err(e) => panic!("store {kind} {name}: {e}"),
        };
        let stored = match status {
            Some(status) => api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await.unwrap(),
            None => stored,
        };
        serde_json::to_value(stored).unwrap()
    }

    /// Deletes the object of `kind` named `name` (in `namespace`, as the tests name it).
    async fn remove(&self, namespace: &str, name: &str) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.on_server(namespace));
        secrets.delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// Stores a NavigatorToken with labels and status; returns it as the server stored it.
    async fn token(&self, namespace: &str, name: &str, labels: Value, status: Value) -> NavigatorToken {
        let stored = self
            .store(json!({
                "apiVersion": TOKENS, "kind": "NavigatorToken",
                "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": {REFRESH: "before"}},
                "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"}},
                "status": status,
            }))
            .await;
        serde_json::from_value(stored).unwrap()
    }

    /// Stores the Secret the operator would write for `token`, holding `access_token`.
    async fn secret(&self, token: &NavigatorToken, access_token: &str) -> Value {
        let namespace = token.namespace().unwrap();
        self.store(serde_json::to_value(written_secret(&token.spec.settings, &token.placement(), &namespace, access_token)).unwrap()).await
    }

    /// Stores a ClusterNavigatorToken with labels, target and status; returns it as stored.
    async fn cluster_token(&self, name: &str, labels: Value, target: Value, status: Value) -> ClusterNavigatorToken {
        let stored = self
            .store(json!({
                "apiVersion": TOKENS, "kind": "ClusterNavigatorToken",
                "metadata": {"name": name, "labels": labels, "annotations": {REFRESH: "before"}},
                "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "target": target,
                         "credentialsSecretRef": {"namespace": "ops", "name": "creds"}},
                "status": status,
            }))
            .await;
        serde_json::from_value(stored).unwrap()
    }

    /// Stores the Secret the operator would write for `cnvt` in `namespace` (with its label,
    /// and owned by it: a real server's garbage collector deletes a Secret without its owner).
    async fn cluster_secret(&self, cnvt: &ClusterNavigatorToken, namespace: &str, access_token: &str) -> Value {
        let secret = written_secret(&cnvt.spec.settings, &cnvt.placement(), &self.on_server(namespace), access_token);
        assert_eq!(secret.labels()[CLUSTER_TOKEN_LABEL], cnvt.name_any());
        assert_eq!(secret.owner_references()[0].uid, cnvt.uid().unwrap());
        self.store(serde_json::to_value(secret).unwrap()).await
    }

    async fn cluster_refresh_requested_at(&self, name: &str) -> String {
        let tokens: Api<ClusterNavigatorToken> = Api::all(self.client.clone());
        tokens.get(name).await.unwrap().metadata.annotations.unwrap()[REFRESH].clone()
    }

    async fn refresh_requested_at(&self, namespace: &str, name: &str) -> String {
        let tokens: Api<NavigatorToken> = Api::namespaced(self.client.clone(), &self.on_server(namespace));
        tokens.get(name).await.unwrap().metadata.annotations.unwrap()[REFRESH].clone()
    }

    /// Denials come from the test API server's controls; None (after saying so) on a real one.
    fn test_server(&self, test: &str) -> Option<&ApiServer> {
        if self.api.is_none() {
            eprintln!("{test}: the denial part is skipped on a real cluster: it denies single verbs through the test API server");
        }
        self.api.as_ref()
    }
}

impl Drop for Cluster {
    /// On a real server, the namespaces and ClusterNavigatorTokens go (without waiting).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if self.api.is_some() {
            return;
        }
        let (client, suffix) = (self.client.clone(), self.suffix.clone());
        let cluster_tokens = std::mem::take(&mut *self.cluster_tokens.lock().unwrap());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let tokens: Api<ClusterNavigatorToken> = Api::all(client.clone());
                for name in cluster_tokens {
                    let _ = tokens.delete(&name, &DeleteParams::background()).await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                for ns in NAMESPACES {
                    let _ = namespaces.delete(&format!("{ns}{suffix}"), &DeleteParams::background()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The Secret the operator writes for `place` in `namespace` holding `access_token`.
fn written_secret(settings: &TokenSettings, place: &Placement, namespace: &str, access_token: &str) -> Secret {
    let issued_at = Timestamp::from_second(IAT).unwrap();
    let material = TokenMaterial {
        access_token: Sensitive::new(access_token),
        id_token: None,
        times: TokenTimes { issued_at, expires_at: Timestamp::from_second(EXP).unwrap() },
    };
    desired(settings, place, namespace, &material, &fingerprint(b"inputs")).unwrap()
}

/// `text` with every whole word (a run of `[a-z0-9-]`) `from` replaced by `to`.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    if from == to {
        return text.to_owned();
    }
    let is_word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let len = rest[start..].find(|c: char| !is_word(c)).unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        out.push_str(if word == from { to } else { word });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
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
    let token = cluster.token("team-a", "ready", json!({}), ready_status()).await;
    let access_token = jwt("ready-token-signature");
    cluster.secret(&token, &access_token).await;

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
    let token = cluster.token("team-b", "failing", json!({}), failing).await;
    let mut secret = cluster.secret(&token, &jwt("old-token")).await;
    secret["data"]["token"] = json!(base64::engine::general_purpose::STANDARD.encode("pasted-by-hand"));
    cluster.store(secret).await;

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
    cluster.remove("team-b", "failing").await;
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
    let token = cluster.token("team-a", "ready", json!({}), status).await;
    cluster.secret(&token, &jwt("api-token-access-token")).await;
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
        cluster.token(namespace, name, json!({"tier": tier}), json!({})).await;
    }
    let renewed = async |cluster: &Cluster| -> Vec<&str> {
        let mut renewed = Vec::new();
        for (ns, name, _) in objects {
            if cluster.refresh_requested_at(ns, name).await != "before" {
                renewed.push(name);
            }
        }
        renewed
    };

    let text = stdout(&cluster.nvt(&["renew", "two"]).await);
    assert_eq!(renewed(&cluster).await, ["two"]);
    let value = cluster.refresh_requested_at("team-a", "two").await;
    value.parse::<Timestamp>().unwrap_or_else(|e| panic!("not RFC 3339: {value:?}: {e}"));
    assert_eq!(text, format!("Requested a new token for NavigatorToken team-a/two ({REFRESH}={value})\n"));

    // --all with a selector: the context's namespace only.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster).await, ["one", "two"]);
    assert_ne!(cluster.refresh_requested_at("team-a", "two").await, value, "a second renewal sets a new value");
    assert_eq!(text.lines().count(), 2, "{text}");

    // -A: every namespace.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-A", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster).await, ["one", "two", "four"]);
    assert!(text.contains("team-b/four") && !text.contains("three"), "{text}");

    // Nothing selected: said, and nothing changes.
    let text = stdout(&cluster.nvt(&["renew", "--all", "-n", "team-b", "-l", "tier=silver"]).await);
    assert_eq!(text, "No NavigatorTokens to renew in namespace \"team-b\"\n");
    assert_eq!(renewed(&cluster).await, ["one", "two", "four"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_refuses_a_name_with_all_neither_and_an_unknown_name() {
    let cluster = Cluster::start("renew-errors").await;
    cluster.token("team-a", "one", json!({}), json!({})).await;

    let both = cluster.nvt(&["renew", "one", "--all"]).await;
    assert_eq!(both.status.code(), Some(2));
    assert!(stderr(&both).contains("cannot be used with"), "{}", stderr(&both));
    let neither = cluster.nvt(&["renew"]).await;
    assert_eq!(neither.status.code(), Some(2));
    assert!(stderr(&neither).contains("required arguments were not provided"), "{}", stderr(&neither));
    let unknown = stderr(&cluster.nvt(&["renew", "nope"]).await);
    assert_eq!(unknown.trim(), r#"error: NavigatorToken "nope" not found in namespace "team-a""#);
    assert_eq!(cluster.refresh_requested_at("team-a", "one").await, "before");

    // A renewal made before an error is still reported.
    let partly = cluster.nvt(&["renew", "one", "nope"]).await;
    assert_eq!(stderr(&partly).trim(), r#"error: NavigatorToken "nope" not found in namespace "team-a""#);
    let value = cluster.refresh_requested_at("team-a", "one").await;
    assert_ne!(value, "before");
    assert_eq!(
        String::from_utf8_lossy(&partly.stdout),
        format!("Requested a new token for NavigatorToken team-a/one ({REFRESH}={value})\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_the_claims_and_annotations_and_the_token_only_with_show_token() {
    let cluster = Cluster::start("inspect").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status()).await;
    let access_token = jwt("inspected-signature");
    cluster.secret(&token, &access_token).await;

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
    let opaque = cluster.token("team-a", "opaque", json!({}), json!({})).await;
    cluster.secret(&opaque, "opaque-token-value").await;
    let text = stdout(&cluster.nvt(&["inspect", "opaque"]).await);
    assert_eq!(field(&text, "Claims"), "none: the token is not a JWT");
    assert!(!text.contains("opaque-token-value"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_missing_secret_the_rbac_denial_and_the_missing_kubeconfig() {
    let cluster = Cluster::start("errors").await;
    let token = cluster.token("team-a", "ready", json!({}), ready_status()).await;

    let missing = stderr(&cluster.nvt(&["inspect", "ready"]).await);
    assert_eq!(
        missing.trim(),
        r#"error: Secret "ready" of NavigatorToken "ready" not found in namespace "team-a": no token has been written there yet; see why with: kubectl nvt status ready -n team-a"#
    );

    // A Secret of that name that someone else wrote, without the token key.
    cluster
        .store(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ready", "namespace": "team-a"},
                              "stringData": {"other": "x"}}))
        .await;
    let no_key = stderr(&cluster.nvt(&["inspect", "ready"]).await);
    assert_eq!(no_key.trim(), r#"error: Secret team-a/ready has no key "token""#);
    let text = stdout(&cluster.nvt(&["status", "ready"]).await);
    assert!(field(&text, "Managed").starts_with("no (not labelled app.kubernetes.io/managed-by=navigator-token-operator"), "{text}");
    assert_eq!(field(&text, "Token"), r#"no key "token""#);

    cluster.secret(&token, &jwt("forbidden-signature")).await;
    if let Some(api) = cluster.test_server("errors") {
        api.forbid("get", "secrets");
        let denied = stderr(&cluster.nvt(&["inspect", "ready"]).await);
        assert!(denied.starts_with(r#"error: not allowed to get Secret "ready" in namespace "team-a": "#), "{denied}");
        assert!(
            denied.contains(r#"cannot get resource "secrets""#) && denied.contains("kubectl auth can-i get secrets -n team-a"),
            "{denied}"
        );
        // status still shows the NavigatorToken, and why the Secret is not shown.
        let text = stdout(&cluster.nvt(&["status", "ready"]).await);
        assert_eq!(field(&text, "Ready").split(' ').next(), Some("True"));
        assert!(field(&text, "Readable").starts_with(r#"no: not allowed to get Secret "ready""#), "{text}");
        assert!(!text.contains("forbidden-signature"), "{text}");
    }

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
    let token = cluster.token("team-a", "ready", json!({}), ready_status()).await;
    cluster.secret(&token, &jwt("argv0-signature")).await;
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
        cluster.cluster_token("vendor", json!({}), json!({"namespaces": ["team-a", "team-b"], "secretName": "vendor-token"}), status).await;
    cluster.cluster_secret(&cnvt, "team-b", &jwt("cluster-status-signature")).await;
    // The Secrets are in tenant namespaces: status must not need them.
    if let Some(api) = cluster.test_server("cluster-status") {
        api.forbid("get", "secrets");
        api.forbid("list", "secrets");
    }

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
    if let Some(api) = cluster.test_server("cluster-status") {
        api.forbid("get", "clusternavigatortokens");
        let error = stderr(&cluster.nvt(&["status", "--cluster", "vendor"]).await);
        assert!(error.starts_with(r#"error: not allowed to get ClusterNavigatorToken "vendor": "#), "{error}");
        assert!(error.trim_end().ends_with("(check with: kubectl auth can-i get clusternavigatortokens)"), "{error}");
        api.allow_all();
    }

    // A new ClusterNavigatorToken, not yet seen by the operator.
    cluster.cluster_token("fresh", json!({}), json!({"namespaces": ["team-a"]}), json!({})).await;
    let text = stdout(&cluster.nvt(&["status", "fresh", "--cluster"]).await);
    assert!(field(&text, "Ready").starts_with("unknown (no status yet"), "{text}");
    assert_eq!(field(&text, "Secret"), "fresh in each selected namespace");
    assert_eq!(field(&text, "Namespaces"), "unknown (no counts in the status yet)");
    assert!(!text.contains("Namespace failures") && !text.contains("API token"), "{text}");
}

/// Which of the ClusterNavigatorTokens one, two and three have been asked for a new token.
async fn renewed(cluster: &Cluster) -> Vec<&'static str> {
    let mut renewed = Vec::new();
    for name in ["one", "two", "three"] {
        if cluster.cluster_refresh_requested_at(name).await != "before" {
            renewed.push(name);
        }
    }
    renewed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_with_cluster_sets_the_annotation_on_exactly_the_named_or_selected_cluster_tokens() {
    let cluster = Cluster::start("cluster-renew").await;
    let target = json!({"namespaces": ["team-a"]});
    for (name, tier) in [("one", "gold"), ("two", "gold"), ("three", "silver")] {
        cluster.cluster_token(name, json!({"tier": tier}), target.clone(), json!({})).await;
    }
    // A NavigatorToken of the same name as a ClusterNavigatorToken is left alone.
    cluster.token("team-a", "one", json!({"tier": "gold"}), json!({})).await;

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "one"]).await);
    assert_eq!(renewed(&cluster).await, ["one"]);
    assert_eq!(cluster.refresh_requested_at("team-a", "one").await, "before");
    let value = cluster.cluster_refresh_requested_at("one").await;
    value.parse::<Timestamp>().unwrap_or_else(|e| panic!("not RFC 3339: {value:?}: {e}"));
    assert_eq!(text, format!("Requested a new token for ClusterNavigatorToken one ({REFRESH}={value})\n"));

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "--all", "-l", "tier=gold"]).await);
    assert_eq!(renewed(&cluster).await, ["one", "two"]);
    assert_ne!(cluster.cluster_refresh_requested_at("one").await, value, "a second renewal sets a new value");
    assert_eq!(text.lines().count(), 2, "{text}");
    let text = stdout(&cluster.nvt(&["renew", "--all", "--cluster"]).await);
    assert_eq!(renewed(&cluster).await, ["one", "two", "three"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(cluster.refresh_requested_at("team-a", "one").await, "before");

    let text = stdout(&cluster.nvt(&["renew", "--cluster", "--all", "-l", "tier=bronze"]).await);
    assert_eq!(text, "No ClusterNavigatorTokens to renew\n");
    // -A means namespaces, which ClusterNavigatorTokens do not have.
    let all_namespaces = cluster.nvt(&["renew", "--cluster", "--all", "-A"]).await;
    assert_eq!(all_namespaces.status.code(), Some(2));
    assert!(stderr(&all_namespaces).contains("cannot be used with"), "{}", stderr(&all_namespaces));
    let unknown = stderr(&cluster.nvt(&["renew", "--cluster", "nope"]).await);
    assert_eq!(unknown.trim(), r#"error: ClusterNavigatorToken "nope" not found"#);
    if let Some(api) = cluster.test_server("cluster-renew") {
        api.forbid("list", "clusternavigatortokens");
        let denied = stderr(&cluster.nvt(&["renew", "--cluster", "--all"]).await);
        assert!(denied.starts_with("error: not allowed to list ClusterNavigatorTokens: "), "{denied}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_with_cluster_shows_the_token_in_the_given_namespace_only_if_written_for_it() {
    let cluster = Cluster::start("cluster-inspect").await;
    let target = json!({"namespaces": ["team-a", "team-b"], "secretName": "vendor-token", "accessTokenKey": "bearer"});
    let cnvt = cluster.cluster_token("vendor", json!({}), target, ready_status()).await;
    let access_token = jwt("cluster-inspected-signature");
    cluster.cluster_secret(&cnvt, "team-b", &access_token).await;

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
    let other = cluster.token("team-a", "vendor-token", json!({}), json!({})).await;
    let mut secret = cluster.secret(&other, &jwt("someone-elses-signature")).await;
    secret["data"]["bearer"] = secret["data"]["token"].clone();
    cluster.store(secret).await;
    let foreign = stderr(&cluster.nvt(&["inspect", "--cluster", "vendor", "-n", "team-a", "--show-token"]).await);
    assert_eq!(foreign.trim(), r#"error: Secret team-a/vendor-token was not written for ClusterNavigatorToken "vendor""#);
    assert!(!foreign.contains("someone-elses-signature"), "{foreign}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_is_not_used_for_a_loopback_api_server_as_with_kubectl() {
    let cluster = Cluster::start("proxy-env").await;
    cluster.token("team-a", "ready", json!({}), ready_status()).await;
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
