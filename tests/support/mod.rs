//! Scenario harness: the real controller loop against an API server and the token endpoint
//! stand-in, both on loopback. With `NAVIGATOR_TEST_KUBECONFIG` set, the same scenarios run
//! against that cluster (API counts then come from the operator's counting client either way).
//! Each test gets a namespace of its own, created as on a real server in both modes.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};
use navigator_token_operator::api_counter::{self, ApiCounter, ApiCounts};
use navigator_token_operator::controller::{self, Settings};
use navigator_token_operator::crd::{ClusterNavigatorToken, ClusterNavigatorTokenStatus, NavigatorToken};
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
/// Environment variable naming the kubeconfig of a real cluster to run against.
pub const KUBECONFIG_VAR: &str = "NAVIGATOR_TEST_KUBECONFIG";
/// Label on every namespace the harness creates, to find leftovers on a shared cluster.
pub const TEST_NAMESPACE_LABEL: &str = "navigator.dev/test";

/// A namespace name unique per test and per run (several tests share a process, several runs
/// share a cluster): `nvt-test-<pid>-<n>-<6 random hex>`, a DNS-1123 label.
pub fn unique_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Each RandomState has fresh keys (random per process), so hashing nothing gives a new number.
    let random = RandomState::new().build_hasher().finish() & 0xff_ffff;
    format!("nvt-test-{}-{n}-{random:06x}", std::process::id())
}

/// True against a real cluster, after saying on stderr that `test` is skipped there: for tests
/// that need the in-process API server (fault injection).
pub fn skip_on_real_cluster(test: &str) -> bool {
    let real = std::env::var_os(KUBECONFIG_VAR).is_some();
    if real {
        eprintln!("{test}: skipped on a real cluster: it injects faults into the in-process API server");
    }
    real
}

/// Every log line of this test binary, from `capture_logs` on.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

/// Captures every log line (debug level, every crate, no colour) from now on. Call it once per
/// test binary, before `Harness::new` (the subscriber is process-wide); the text starts with
/// "capture is live", so a test can tell that capturing worked.
pub fn capture_logs() -> LogCapture {
    let logs = LogCapture::default();
    tracing_subscriber::fmt().with_writer(logs.clone()).with_max_level(tracing::Level::DEBUG).with_ansi(false).init();
    tracing::debug!("capture is live");
    logs
}

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
    /// Namespaces and ClusterNavigatorTokens the test created besides `ns` (deleted on a real cluster).
    extra: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

impl Harness {
    /// Starts the servers and creates the credentials Secret; tokens live `lifetime`.
    pub async fn new(lifetime: Duration) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        let tokens = TokenServer::start(TokenServerConfig { lifetime, ..TokenServerConfig::default() }).await;
        let (api, config) = match std::env::var(KUBECONFIG_VAR) {
            Ok(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("NAVIGATOR_TEST_KUBECONFIG is readable");
                let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kubeconfig is usable");
                (None, config)
            }
            Err(_) => {
                let api = ApiServer::start().await;
                let config = Config::new(api.url().parse().unwrap());
                (Some(api), config)
            }
        };
        let client = Client::try_from(config.clone()).unwrap();
        if api.is_none() {
            // The in-process server serves NavigatorTokens from the start; a real one only once
            // the CRD is established.
            navigator_token_operator::install_crd(&client).await.expect("install CRD");
            let crds = Api::<CustomResourceDefinition>::all(client.clone());
            let established = await_condition(crds, "navigatortokens.navigator.dev", conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established).await.expect("CRD established in time").expect("watch the CRD");
        }
        let ns = unique_namespace();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
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
            extra: std::sync::Mutex::default(),
        };
        harness.put_credentials("testkit-client", "testkit-secret").await;
        harness
    }

    /// Starts an operator (a fresh counter, metrics and caches, as after a process restart).
    pub fn start_operator(&mut self) {
        self.start_operator_allowing(&["127.0.0.1"]);
    }

    /// Starts an operator whose `--allowed-endpoint-hosts` are `hosts`.
    pub fn start_operator_allowing(&mut self, hosts: &[&str]) {
        self.start_operator_with(ClientOptions {
            allowed_hosts: Some(hosts.iter().map(|h| (*h).to_owned()).collect()),
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        });
    }

    /// Starts an operator whose token client has these options (allow-list, proxy…).
    pub fn start_operator_with(&mut self, options: ClientOptions) {
        assert!(self.operator.is_none(), "operator already running");
        self.metrics = Arc::new(Metrics::default());
        self.counter = ApiCounter::new(self.metrics.kube_api_requests.clone());
        self.synced = Arc::default();
        let client = api_counter::client(self.config.clone(), self.counter.clone()).unwrap();
        let tokens = TokenClient::new(options).unwrap();
        let settings =
            Settings { namespace: Some(self.ns.clone()), selector: None, concurrency: 16, instance: "test-operator".into(), cluster: None };
        let shutdown = Shutdown::default();
        let synced = self.synced.clone();
        let on_synced = move || synced.store(true, Ordering::Release);
        let pending = controller::PendingRefreshTokens::new(client.clone());
        let task =
            tokio::spawn(controller::run(client, tokens, settings, self.metrics.clone(), pending, on_synced, shutdown.clone().wait()));
        self.operator = Some((shutdown, task));
    }

    /// Starts an operator watching all namespaces, with the ClusterNavigatorToken controller
    /// allowed to read credentials from the harness namespace `ns` only.
    pub async fn start_cluster_operator(&mut self) {
        assert!(self.operator.is_none(), "operator already running");
        // The in-process server learns the cluster kind and its status subresource from the CRD.
        navigator_token_operator::install_crd(&self.client).await.expect("install CRDs");
        if self.api.is_some() {
            // Events about cluster-scoped objects go to `default`, which a real cluster always has.
            let default = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
            Api::<Namespace>::all(self.client.clone())
                .patch("default", &PatchParams::apply("scenario-test"), &Patch::Apply(&default))
                .await
                .expect("namespace default");
        }
        self.metrics = Arc::new(Metrics::default());
        self.counter = ApiCounter::new(self.metrics.kube_api_requests.clone());
        self.synced = Arc::default();
        let client = api_counter::client(self.config.clone(), self.counter.clone()).unwrap();
        let tokens = TokenClient::new(ClientOptions {
            allowed_hosts: Some(vec!["127.0.0.1".to_owned()]),
            request_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        })
        .unwrap();
        let cluster = controller::ClusterSettings { credentials_namespaces: vec![self.ns.clone()] };
        let settings =
            Settings { namespace: None, selector: None, concurrency: 16, instance: "test-operator".into(), cluster: Some(cluster) };
        let shutdown = Shutdown::default();
        let synced = self.synced.clone();
        let on_synced = move || synced.store(true, Ordering::Release);
        let pending = controller::PendingRefreshTokens::new(client.clone());
        let task =
            tokio::spawn(controller::run(client, tokens, settings, self.metrics.clone(), pending, on_synced, shutdown.clone().wait()));
        self.operator = Some((shutdown, task));
    }

    /// Creates a namespace with `labels` (and the test label, to find leftovers).
    pub async fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let mut all: std::collections::BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        all.insert(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned());
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.to_owned()), labels: Some(all), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &namespace).await.expect("create namespace");
        self.extra.lock().unwrap().0.push(name.to_owned());
    }

    /// ClusterNavigatorTokens.
    pub fn cluster_tokens(&self) -> Api<ClusterNavigatorToken> {
        Api::all(self.client.clone())
    }

    /// Creates a ClusterNavigatorToken pointing at the stand-in, with credentials in the harness
    /// namespace and `extra` merged into its spec.
    pub async fn create_cluster_token(&self, name: &str, extra: Value) -> ClusterNavigatorToken {
        let mut spec = json!({
            "orgId": ORG,
            "credentialsSecretRef": {"name": CREDS, "namespace": self.ns},
            "endpoint": {"type": "CSP", "url": self.tokens.base_url()},
        });
        merge(&mut spec, extra);
        let token: ClusterNavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.extra.lock().unwrap().1.push(name.to_owned());
        self.cluster_tokens().create(&PostParams::default(), &token).await.expect("create ClusterNavigatorToken")
    }

    /// The ClusterNavigatorToken's status, if any.
    pub async fn cluster_status(&self, name: &str) -> Option<ClusterNavigatorTokenStatus> {
        self.cluster_tokens().get(name).await.expect("get ClusterNavigatorToken").status
    }

    /// The ClusterNavigatorToken's Ready condition as (status, reason, message).
    pub async fn cluster_ready(&self, name: &str) -> Option<(String, String, String)> {
        let condition = self.cluster_status(name).await?.token.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        Some((condition.status, condition.reason, condition.message))
    }

    /// The access token in Secret `name` of namespace `ns`, if any.
    pub async fn token_in(&self, ns: &str, name: &str) -> Option<String> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns).get_opt(name).await.expect("get Secret")?;
        let bytes = secret.data?.get("token")?.0.clone();
        Some(String::from_utf8(bytes).unwrap())
    }

    /// Waits (up to 5 s: Events are published after the status write) for an Event of `kind`
    /// and `reason` about ClusterNavigatorToken `name`.
    pub async fn cluster_has_event(&self, name: &str, kind: &str, reason: &str) -> bool {
        within_five_seconds(|| async { self.cluster_events(name).await.iter().any(|(k, r)| k == kind && r == reason) }).await
    }

    /// Events about ClusterNavigatorToken `name` (in `default`), as (type, reason).
    pub async fn cluster_events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), "default");
        let selector = format!("regarding.kind=ClusterNavigatorToken,regarding.name={name}");
        let list = api.list(&ListParams::default().fields(&selector)).await.expect("list events");
        // On a shared cluster an earlier test's object of the same name left Events too.
        let uid = self.cluster_tokens().get_opt(name).await.expect("get ClusterNavigatorToken").and_then(|c| c.metadata.uid);
        let mut events: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| uid.is_none() || e.regarding.as_ref().and_then(|r| r.uid.as_ref()) == uid.as_ref())
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect();
        events.sort();
        events
    }

    /// Stops the operator and waits for it to finish.
    pub async fn stop_operator(&mut self) {
        if let Some((shutdown, task)) = self.operator.take() {
            shutdown.trigger();
            tokio::time::timeout(Duration::from_secs(20), task).await.expect("operator stops in time").unwrap();
        }
    }

    /// Kills the operator as a crash would: nothing in flight is finished or flushed.
    pub async fn crash_operator(&mut self) {
        if let Some((_, task)) = self.operator.take() {
            task.abort();
            let _ = task.await;
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

    /// A kubeconfig file for the API server, for the operator's binary run as a process: the
    /// test API server's, written into `dir`, or the real cluster's.
    pub fn kubeconfig_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        match (&self.api, std::env::var_os(KUBECONFIG_VAR)) {
            (Some(api), _) => {
                let path = dir.join(format!("{}.kubeconfig", self.ns));
                std::fs::write(&path, api.kubeconfig()).expect("write the kubeconfig");
                path
            }
            (None, Some(path)) => path.into(),
            (None, None) => unreachable!("a harness without its own server runs against NAVIGATOR_TEST_KUBECONFIG"),
        }
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

    /// Waits until the Ready condition is (`status`, `reason`).
    pub async fn wait_for_ready(&self, name: &str, status: &str, reason: &str) {
        self.wait_until(&format!("{name} Ready={status} reason {reason}"), Duration::from_secs(20), || async {
            self.ready(name).await == Some((status.to_owned(), reason.to_owned()))
        })
        .await;
    }

    /// Waits (up to 5 s: Events are published after the status write) for an Event of `kind`
    /// and `reason` about `name`.
    pub async fn has_event(&self, name: &str, kind: &str, reason: &str) -> bool {
        within_five_seconds(|| async { self.events(name).await.iter().any(|(k, r)| k == kind && r == reason) }).await
    }

    /// The running operator's exposition line of `metric` for NavigatorToken `name`, if any.
    pub fn series(&self, metric: &str, name: &str) -> Option<String> {
        let text = self.metrics.encode();
        let line = text.lines().find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&format!("name=\"{name}\"")));
        line.map(str::to_owned)
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

    /// Events the operator published about NavigatorToken `name`, as (type, reason).
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        // Selected by the server (both servers support these fields): a real namespace can hold
        // events about other objects, e.g. a Secret of the same name.
        let selector = format!("regarding.kind=NavigatorToken,regarding.name={name}");
        let mut events: Vec<(String, String)> = api
            .list(&ListParams::default().fields(&selector))
            .await
            .expect("list events")
            .items
            .into_iter()
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

    /// Stops the operator; dropping the harness then deletes the namespace on a real cluster.
    pub async fn finish(mut self) {
        self.stop_operator().await;
    }
}

impl Drop for Harness {
    /// On a real cluster, asks for the namespace's deletion, also after a failed test, and does
    /// not wait for it to go: a shared cluster can take minutes to delete a namespace.
    fn drop(&mut self) {
        if self.api.is_some() {
            return;
        }
        let (config, ns) = (self.config.clone(), self.ns.clone());
        let (mut all, cluster_tokens) = std::mem::take(&mut *self.extra.lock().unwrap());
        all.push(ns);
        // Drop cannot await: the request goes from a thread with a runtime of its own.
        let request = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            runtime.block_on(async {
                let Ok(client) = Client::try_from(config) else { return };
                let params = DeleteParams::background();
                // Cluster-scoped: a namespace's deletion does not take them along.
                let tokens = Api::<ClusterNavigatorToken>::all(client.clone());
                for name in cluster_tokens {
                    let deleted = tokio::time::timeout(Duration::from_secs(10), tokens.delete(&name, &params)).await;
                    // Gone already (a test deleted it) is fine.
                    let gone = match &deleted {
                        Ok(Ok(_)) => true,
                        Ok(Err(kube::Error::Api(status))) => status.code == 404,
                        _ => false,
                    };
                    if !gone {
                        eprintln!("could not delete ClusterNavigatorToken {name}; delete it by hand");
                    }
                }
                let namespaces = Api::<Namespace>::all(client);
                for ns in all {
                    if !matches!(tokio::time::timeout(Duration::from_secs(10), namespaces.delete(&ns, &params)).await, Ok(Ok(_))) {
                        eprintln!("could not delete namespace {ns}; delete namespaces labelled {TEST_NAMESPACE_LABEL}=true by hand");
                    }
                }
            });
        });
        let _ = request.join();
    }
}

/// True once `check` is, looking every 50 ms for up to 5 s (Events follow the status write).
async fn within_five_seconds<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
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

#[cfg(test)]
mod tests {
    use super::unique_namespace;

    #[test]
    fn namespace_names_are_unique_dns_labels() {
        let names: std::collections::HashSet<String> = (0..2000).map(|_| unique_namespace()).collect();
        assert_eq!(names.len(), 2000, "names repeat");
        for name in &names {
            let valid_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let alphanumeric_ends = [name.as_bytes()[0], name.as_bytes()[name.len() - 1]].iter().all(u8::is_ascii_alphanumeric);
            assert!(name.len() <= 63 && valid_chars && alphanumeric_ends, "not a DNS-1123 label: {name}");
        }
        // The suffix is random, not fixed per process: a later run that gets the same process id
        // (and counter) still gets other names.
        let suffixes: std::collections::HashSet<&str> = names.iter().filter_map(|n| n.rsplit('-').next()).collect();
        assert!(suffixes.len() > 1990, "only {} distinct suffixes", suffixes.len());
    }
}
