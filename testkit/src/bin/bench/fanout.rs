//! The ClusterNavigatorToken fan-out: one token for N namespaces. One operator process in
//! cluster mode (all namespaces), N namespaces selected by label, one ClusterNavigatorToken:
//! time until all N Secrets hold the token, after creation and after a forced refresh (goal:
//! 10 s), token requests (must be 1 per window), the operator's API requests per refresh (goal:
//! N + 1 Secret writes, 1 status write, 0 GETs), time until a namespace that starts to match holds
//! the token (goal: 2 s), peak RSS (goal: 40 MiB).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use navigator_token_operator::api_counter::ApiCounts;
use navigator_token_operator::crd::ClusterNavigatorToken;
use serde_json::json;
use testkit::token_server::{TokenServer, TokenServerConfig};

use crate::cluster::{CREDENTIALS, Cluster};
use crate::operator::{self, Operator, describe};
use crate::procfs::Memory;
use crate::report::{Table, mib, mib_goal, secs, secs_goal, verdict};

/// Token lifetime: long enough that only the forced refresh happens in the run.
const LIFETIME: Duration = Duration::from_secs(3600);
/// All N Secrets hold the token within this, after creation and after a forced refresh.
const ALL_HOLD_GOAL: Duration = Duration::from_secs(10);
/// A namespace that starts to match holds the token within this.
const NEW_NAMESPACE_GOAL: Duration = Duration::from_secs(2);
/// Peak RSS of the operator over the whole run (MiB).
const PEAK_GOAL_MIB: u64 = 40;
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
    /// Refresh requested (annotation) → all N Secrets hold the new token.
    refresh: Duration,
    /// A namespace labelled to match → its Secret holds the token.
    new_namespace: Duration,
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

    crate::progress("fan-out: forcing a refresh");
    let clusters = Api::<ClusterNavigatorToken>::all(cluster.client.clone());
    let refreshed = Instant::now();
    let at = format!("{:?}", std::time::SystemTime::now());
    let patch = json!({"metadata": {"annotations": {navigator_token_operator::REFRESH_REQUESTED_ANNOTATION: at}}});
    clusters.patch("fanout", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_all_hold(&cluster, &stand_in, 2, n, idle_timeout).await?;
    let refresh = refreshed.elapsed();
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let after_refresh = operator.scrape().await?;

    crate::progress("fan-out: a namespace that starts to match");
    let name = "tenant-new";
    let namespaces = Api::<Namespace>::all(cluster.client.clone());
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}}))?).await?;
    let labelled = Instant::now();
    namespaces.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {LABEL.0: LABEL.1}}}))).await?;
    let want = stand_in.issued().last().map(|t| t.access_token.clone()).ok_or_else(|| anyhow!("no token issued"))?;
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), name);
    while !secrets.get_opt(SECRET).await?.is_some_and(|s| holds(&s, &want)) {
        if labelled.elapsed() > idle_timeout {
            return Err(anyhow!("{name} got no token within {idle_timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_namespace = labelled.elapsed();
    let memory = operator.memory()?;
    let cpu = operator.cpu_seconds()?;
    operator.stop().await?;
    Ok(FanOut {
        n,
        all_hold,
        first_requests,
        refresh,
        new_namespace,
        refresh_requests: stand_in.request_count() - first_requests,
        refresh_api: after_refresh.since(&after_first),
        first_api: after_first.since(&before),
        empty,
        memory,
        cpu,
    })
}

/// Watches the fan-out's Secrets until all `n` hold token number `issued` (a watch, not a list
/// every few milliseconds: the API server shares the CPUs with the operator).
async fn wait_all_hold(cluster: &Cluster, stand_in: &TokenServer, issued: usize, n: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want = loop {
        if let Some(token) = stand_in.issued().get(issued - 1) {
            break token.access_token.clone();
        }
        if Instant::now() > deadline {
            return Err(anyhow!("token #{issued} not issued after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let config = watcher::Config::default().labels("navigator.dev/cluster-token=fanout");
    let mut events = std::pin::pin!(watcher(Api::<Secret>::all(cluster.client.clone()), config).default_backoff());
    let mut holding = std::collections::HashSet::new();
    let watched = async {
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) if holds(&s, &want) => {
                    holding.insert((s.metadata.namespace, s.metadata.name));
                }
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s) => {
                    holding.remove(&(s.metadata.namespace, s.metadata.name));
                }
                _ => {}
            }
            if holding.len() >= n {
                return Ok(());
            }
        }
        Err(anyhow!("the watch of the fan-out's Secrets ended"))
    };
    tokio::time::timeout_at(deadline.into(), watched)
        .await
        .map_err(|_| anyhow!("not all {n} Secrets hold token #{issued} after {timeout:?}"))?
}

/// Whether `secret` holds the access token `want`.
fn holds(secret: &Secret, want: &str) -> bool {
    secret.data.as_ref().and_then(|d| d.get("token")).is_some_and(|t| t.0 == want.as_bytes())
}

impl FanOut {
    pub fn invariants_hold(&self) -> bool {
        self.first_requests == 1 && self.refresh_requests == 1
    }

    pub fn render(&self) -> String {
        let n = self.n;
        let mut table = Table::new(&["measurement", "value", "goal"]);
        let api = &self.refresh_api;
        // N tenant Secrets and the operator's own copy of the shared token (in its credentials
        // namespace), one status write.
        let writes_ok = api.get("patch", "secrets") == n as u64 + 1 && api.get("patch", "clusternavigatortokens/status") == 1;
        let gets = api.verb("get");
        table.row(&[
            "ClusterNavigatorToken created → all N Secrets hold the token".into(),
            secs(self.all_hold),
            secs_goal(self.all_hold, ALL_HOLD_GOAL),
        ]);
        table.row(&[
            "token requests for the first token".into(),
            self.first_requests.to_string(),
            format!("= 1: {}", verdict(self.first_requests == 1)),
        ]);
        table.row(&["operator API requests, first fan-out".into(), describe(&self.first_api, None), String::new()]);
        table.row(&[
            "refresh requested (annotation) → all N Secrets hold the new token".into(),
            secs(self.refresh),
            secs_goal(self.refresh, ALL_HOLD_GOAL),
        ]);
        table.row(&[
            "token requests for the refresh".into(),
            self.refresh_requests.to_string(),
            format!("= 1: {}", verdict(self.refresh_requests == 1)),
        ]);
        table.row(&[
            "operator API requests per refresh".into(),
            describe(api, None),
            format!("N + 1 Secret writes (the shared copy), 1 status write: {}", verdict(writes_ok)),
        ]);
        table.row(&["GETs per refresh".into(), gets.to_string(), format!("= 0: {}", verdict(gets == 0))]);
        table.row(&[
            "a namespace labelled to match → its Secret holds the token".into(),
            secs(self.new_namespace),
            secs_goal(self.new_namespace, NEW_NAMESPACE_GOAL),
        ]);
        table.row(&["RSS before the ClusterNavigatorToken (N namespaces watched)".into(), mib(self.empty.rss_kib), String::new()]);
        table.row(&[
            "peak RSS / CPU (whole run)".into(),
            format!("{} / {:.2} s", mib(self.memory.peak_kib), self.cpu),
            mib_goal(self.memory.peak_kib, PEAK_GOAL_MIB),
        ]);
        format!("\n## ClusterNavigatorToken fan-out to N = {n} namespaces\n\n{}", table.render())
    }
}
