//! The ClusterNavigatorToken fan-out: one token for N namespaces. One operator process in
//! cluster mode (all namespaces), N namespaces selected by label, one ClusterNavigatorToken:
//! time until all N Secrets hold the token, token requests (must be 1 per window), the
//! operator's API requests per refresh (goal: N Secret writes, 1 status write, 0 GETs), peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use navigator_token_operator::api_counter::ApiCounts;
use navigator_token_operator::crd::ClusterNavigatorToken;
use serde_json::json;
use testkit::token_server::{TokenServer, TokenServerConfig};

use crate::cluster::{CREDENTIALS, Cluster};
use crate::operator::{self, Operator, describe};
use crate::procfs::Memory;
use crate::report::{Table, mib, secs, verdict};

/// Token lifetime: the refresh (at about two thirds of it, minus jitter) must come after the
/// fan-out of the first token has settled.
const LIFETIME: Duration = Duration::from_secs(120);
/// Label selecting the bench namespaces.
const LABEL: (&str, &str) = ("bench.navigator.dev/fanout", "yes");
const SECRET: &str = "fanout-token";

/// What one fan-out run measured.
pub struct FanOut {
    n: usize,
    /// ClusterNavigatorToken created → all N Secrets hold the token.
    all_hold: Duration,
    /// Token requests for the first token (must be 1).
    first_requests: usize,
    /// Refresh request → all N Secrets hold the new token.
    refresh: Duration,
    /// Token requests for the refresh (must be 1).
    refresh_requests: usize,
    /// The operator's API requests for the refresh.
    refresh_api: ApiCounts,
    /// The operator's API requests for the first fan-out.
    first_api: ApiCounts,
    /// Before the ClusterNavigatorToken (N namespaces watched, nothing to do).
    empty: Memory,
    memory: Memory,
    cpu: f64,
}

pub async fn run(bin: &Path, concurrency: u16, dir: &Path, n: usize) -> Result<FanOut> {
    let cluster = Cluster::in_process(dir).await?;
    navigator_token_operator::install_crd(&cluster.client).await?;
    let server = cluster.server.as_ref().ok_or_else(|| anyhow!("the fan-out runs against the in-process API server"))?;
    let ops = cluster.namespace("fanout-operator", n).await?;
    cluster.put_credentials(&ops, crate::CLIENT_ID, crate::CLIENT_SECRET).await?;
    crate::progress(&format!("fan-out: creating {n} namespaces"));
    for i in 0..n {
        server.insert(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("tenant-{i:05}"), "labels": {LABEL.0: LABEL.1}}}),
        );
    }
    let stand_in = TokenServer::start(TokenServerConfig { lifetime: LIFETIME, ..TokenServerConfig::default() }).await;
    let mut operator = Operator::spawn(&operator::Spec {
        bin,
        kubeconfig: &cluster.kubeconfig,
        namespace: &ops,
        cluster_credentials: Some(&ops),
        token_rate_limit: 0.0,
        concurrency,
        log: dir.join(format!("operator-fanout-{n}.log")),
    })?;
    operator.wait_ready(crate::START_TIMEOUT).await?;
    let idle_timeout = Duration::from_secs(120) + Duration::from_millis(50) * n as u32;
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let before = operator.scrape().await?;
    let empty = operator.memory()?;

    crate::progress(&format!("fan-out: one ClusterNavigatorToken for {n} namespaces"));
    let token: ClusterNavigatorToken = serde_json::from_value(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken", "metadata": {"name": "fanout"},
        "spec": {
            "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
            "credentialsSecretRef": {"name": CREDENTIALS, "namespace": ops},
            "endpoint": {"type": "CSP", "url": stand_in.base_url()},
            "target": {"secretName": SECRET, "namespaceSelector": {"matchLabels": {LABEL.0: LABEL.1}}},
        },
    }))?;
    let started = Instant::now();
    Api::<ClusterNavigatorToken>::all(cluster.client.clone()).create(&PostParams::default(), &token).await?;
    wait_all_hold(&cluster, &stand_in, 1, n, idle_timeout).await?;
    let all_hold = started.elapsed();
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let after_first = operator.scrape().await?;
    let first_requests = stand_in.request_count();

    crate::progress("fan-out: waiting for the refresh");
    let deadline = Instant::now() + LIFETIME;
    while stand_in.request_count() < 2 {
        if Instant::now() > deadline {
            return Err(anyhow!("no refresh within the token lifetime"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed = Instant::now();
    wait_all_hold(&cluster, &stand_in, 2, n, idle_timeout).await?;
    let refresh = refreshed.elapsed();
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let after_refresh = operator.scrape().await?;
    let memory = operator.memory()?;
    let cpu = operator.cpu_seconds()?;
    operator.stop().await?;
    Ok(FanOut {
        n,
        all_hold,
        first_requests,
        refresh,
        refresh_requests: stand_in.request_count() - first_requests,
        refresh_api: after_refresh.since(&after_first),
        first_api: after_first.since(&before),
        empty,
        memory,
        cpu,
    })
}

/// Polls (a list of the labelled Secrets) until all `n` hold token number `issued`.
async fn wait_all_hold(cluster: &Cluster, stand_in: &TokenServer, issued: usize, n: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let secrets: Api<Secret> = Api::all(cluster.client.clone());
    let selector = ListParams::default().labels("navigator.dev/cluster-token=fanout");
    loop {
        let want = stand_in.issued().get(issued - 1).map(|t| t.access_token.clone());
        let holding = match &want {
            Some(want) => secrets
                .list(&selector)
                .await?
                .items
                .iter()
                .filter(|s| s.data.as_ref().and_then(|d| d.get("token")).is_some_and(|t| t.0 == want.as_bytes()))
                .count(),
            None => 0,
        };
        if holding >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!("only {holding} of {n} Secrets hold token #{issued} after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl FanOut {
    pub fn invariants_hold(&self) -> bool {
        self.first_requests == 1 && self.refresh_requests == 1
    }

    pub fn render(&self) -> String {
        let n = self.n;
        let mut table = Table::new(&["measurement", "value", "goal"]);
        let api = &self.refresh_api;
        let writes_ok =
            api.get("patch", "secrets") == n as u64 && api.get("patch", "clusternavigatortokens/status") == 1 && api.verb("get") == 0;
        table.row(&["ClusterNavigatorToken created → all N Secrets hold the token".into(), secs(self.all_hold), String::new()]);
        table.row(&[
            "token requests for the first token".into(),
            self.first_requests.to_string(),
            format!("= 1: {}", verdict(self.first_requests == 1)),
        ]);
        table.row(&["operator API requests, first fan-out".into(), describe(&self.first_api, None), String::new()]);
        table.row(&["refresh request → all N Secrets hold the new token".into(), secs(self.refresh), String::new()]);
        table.row(&[
            "token requests for the refresh".into(),
            self.refresh_requests.to_string(),
            format!("= 1: {}", verdict(self.refresh_requests == 1)),
        ]);
        table.row(&[
            "operator API requests per refresh".into(),
            describe(api, None),
            format!("N Secret writes + 1 status write, 0 GETs: {}", verdict(writes_ok)),
        ]);
        table.row(&["RSS before the ClusterNavigatorToken (N namespaces watched)".into(), mib(self.empty.rss_kib), String::new()]);
        table.row(&["peak RSS / CPU (whole run)".into(), format!("{} / {:.2} s", mib(self.memory.peak_kib), self.cpu), String::new()]);
        format!("\n## ClusterNavigatorToken fan-out to N = {n} namespaces\n\n{}", table.render())
    }
}
