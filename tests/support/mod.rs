//! Scenario harness: the real controller loop against an API server and the token endpoint
//! stand-in, both on loopback. With `NAVIGATOR_TEST_KUBECONFIG` set, the same scenarios run
//! against that cluster in a namespace of their own (API counts then come from the operator's
//! counting client either way).
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use navigator_token_operator::api_counter::{self, ApiCounter, ApiCounts};
use navigator_token_operator::controller::{self, Settings};
use navigator_token_operator::crd::NavigatorToken;
use navigator_token_operator::leader::Shutdown;
use navigator_token_operator::metrics::Metrics;
use navigator_token_operator::token::{ClientOptions, TokenClient};
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;
use testkit::token_server::{TokenServer, TokenServerConfig};
use tokio::task::JoinHandle;

/// The GUID every scenario uses.
pub const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";
/// Name of the credentials Secret the harness creates.
pub const CREDS: &str = "partner-oauth-client";

/// One scenario's world.
pub struct Harness {
    /// The in-process API server (None against a real cluster).
    pub api: Option<ApiServer>,
    /// The token endpoint stand-in.
    pub tokens: TokenServer,
    /// The test's own (uncounted) client.
    pub client: Client,
    /// Client configuration, for operators started later.
    pub config: Config,
    /// The scenario's namespace.
    pub ns: String,
    /// The running operator's API request counter.
    pub counter: ApiCounter,
    /// The running operator's metrics.
    pub metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    operator: Option<(Shutdown, JoinHandle<()>)>,
}

impl Harness {
    /// Starts the servers and creates the credentials Secret; tokens live `lifetime`.
    pub async fn new(lifetime: Duration) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let tokens = TokenServer::start(TokenServerConfig { lifetime, ..TokenServerConfig::default() }).await;
        let (api, config, ns) = match std::env::var("NAVIGATOR_TEST_KUBECONFIG") {
            Ok(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("NAVIGATOR_TEST_KUBECONFIG is readable");
                let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig is usable");
                let ns = format!(
                    "nvt-test-{}",
                    std::process::id() ^ (std::time::SystemTime::now().elapsed().unwrap_or_default().subsec_nanos())
                );
                (None, config, ns)
            }
            Err(_) => {
                let api = ApiServer::start().await;
                let config = Config::new(api.url().parse().unwrap());
                (Some(api), config, "team-a".to_owned())
            }
        };
        let client = Client::try_from(config.clone()).unwrap();
        if api.is_none() {
            navigator_token_operator::install_crd(&client).await.expect("install CRD");
        }
        // The test API server, like a cluster, refuses writes into a namespace that does not exist.
        let namespace = Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.expect("create namespace");
        let harness = Harness {
            api,
            tokens,
            client,
            config,
            ns,
            counter: ApiCounter::default(),
            metrics: Arc::new(Metrics::default()),
            synced: Arc::default(),
            operator: None,
        };
        harness.put_credentials("testkit-client", "testkit-secret").await;
        harness
    }

    /// Starts an operator (a fresh counter, metrics and caches, as after a process restart).
    pub fn start_operator(&mut self) {
        assert!(self.operator.is_none(), "operator already running");
        self.metrics = Arc::new(Metrics::default());
        self.counter = ApiCounter::new(self.metrics.kube_api_requests.clone());
        self.synced = Arc::default();
        let client = api_counter::client(self.config.clone(), self.counter.clone()).unwrap();
        let tokens = TokenClient::new(ClientOptions {
            allowed_hosts: Some(vec!["127.0.0.1".into()]),
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        })
        .unwrap();
        let settings = Settings { namespace: Some(self.ns.clone()), selector: None, concurrency: 16, instance: "test-operator".into() };
        let shutdown = Shutdown::default();
        let synced = self.synced.clone();
        let on_synced = move || synced.store(true, Ordering::Release);
        let task = tokio::spawn(controller::run(client, tokens, settings, self.metrics.clone(), on_synced, shutdown.clone().wait()));
        self.operator = Some((shutdown, task));
    }

    /// Stops the operator and waits for it to finish.
    pub async fn stop_operator(&mut self) {
        if let Some((shutdown, task)) = self.operator.take() {
            shutdown.trigger();
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("operator stops in time").unwrap();
        }
    }

    /// Waits until the operator's caches have listed everything.
    pub async fn wait_synced(&self) {
        let synced = self.synced.clone();
        self.wait_until("operator caches synced", Duration::from_secs(10), || {
            let synced = synced.clone();
            async move { synced.load(Ordering::Acquire) }
        })
        .await;
    }

    /// Creates or replaces the credentials Secret.
    pub async fn put_credentials(&self, client_id: &str, client_secret: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": CREDS, "labels": {"navigator.dev/credentials": "true"}},
            "stringData": {"client_id": client_id, "client_secret": client_secret},
        }))
        .unwrap();
        self.secrets().patch(CREDS, &PatchParams::apply("scenario-test").force(), &Patch::Apply(&secret)).await.expect("apply credentials");
    }

    /// Secrets in the scenario namespace.
    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// NavigatorTokens in the scenario namespace.
    pub fn navigator_tokens(&self) -> Api<NavigatorToken> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a NavigatorToken pointing at the stand-in, with `extra` merged into its spec.
    pub async fn create_token(&self, name: &str, extra: Value) -> NavigatorToken {
        let mut spec = json!({
            "orgId": ORG,
            "credentialsSecretRef": {"name": CREDS},
            "endpoint": {"type": "CSP", "url": self.tokens.base_url()},
        });
        merge(&mut spec, extra);
        let token: NavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.navigator_tokens().create(&PostParams::default(), &token).await.expect("create NavigatorToken")
    }

    /// Merge-patches a NavigatorToken.
    pub async fn patch_token(&self, name: &str, patch: Value) {
        self.navigator_tokens().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch NavigatorToken");
    }

    /// Deletes a NavigatorToken.
    pub async fn delete_token(&self, name: &str) {
        self.navigator_tokens().delete(name, &DeleteParams::background()).await.expect("delete NavigatorToken");
    }

    /// The NavigatorToken as stored.
    pub async fn token(&self, name: &str) -> NavigatorToken {
        self.navigator_tokens().get(name).await.expect("get NavigatorToken")
    }

    /// The access token in a Secret, if any.
    pub async fn secret_token(&self, name: &str, key: &str) -> Option<String> {
        let secret = self.secrets().get_opt(name).await.expect("get Secret")?;
        let bytes = secret.data?.get(key)?.0.clone();
        Some(String::from_utf8(bytes).unwrap())
    }

    /// The Ready condition's (status, reason), if any.
    pub async fn ready(&self, name: &str) -> Option<(String, String)> {
        let token = self.token(name).await;
        let condition = token.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        Some((condition.status, condition.reason))
    }

    /// Waits until the Secret holds the token the stand-in issued last.
    pub async fn wait_for_token_in_secret(&self, secret: &str, issued: usize) {
        let timeout = Duration::from_secs(20);
        self.wait_until(&format!("Secret {secret} holds issued token #{issued}"), timeout, || async {
            let Some(last) = self.tokens.issued().get(issued - 1).map(|t| t.access_token.clone()) else { return false };
            self.secret_token(secret, "token").await.as_deref() == Some(last.as_str())
        })
        .await;
    }

    /// Events the operator published about `name`, as (type, reason).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut events: Vec<(String, String)> = api
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect();
        events.sort();
        events
    }

    /// The operator's API requests so far.
    pub fn api_counts(&self) -> ApiCounts {
        self.counter.snapshot()
    }

    /// Polls `check` every 50 ms until true; panics with `what` after `timeout`.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check().await {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the operator and, on a real cluster, deletes the namespace.
    pub async fn finish(mut self) {
        self.stop_operator().await;
        if self.api.is_none() {
            let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.ns, &DeleteParams::background()).await;
        }
    }
}

/// Shallow-recursive JSON merge (objects merge, anything else replaces).
pub fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Asserts that a value is within an inclusive range, with a readable message.
pub fn assert_between(what: &str, value: u64, low: u64, high: u64) {
    assert!(value >= low && value <= high, "{what}: {value} not in {low}..={high}");
}
