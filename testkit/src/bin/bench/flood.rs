//! A tenant's flood of large credentials Secrets: N Secrets labelled
//! `navigator.dev/credentials=true`, each holding working client credentials and a padding
//! key that brings it to the API server's limit (1 MiB of data), in the one namespace the
//! operator watches. Measures the operator's RSS before, once the watch has delivered them
//! (steady and peak), and after a restart whose first list carries them all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use navigator_token_operator::CREDENTIALS_LABEL;
use navigator_token_operator::crd::NavigatorToken;
use serde_json::json;
use testkit::token_server::{TokenServer, TokenServerConfig};

use crate::cluster::Cluster;
use crate::operator::{self, Operator};
use crate::procfs::Memory;
use crate::report::{Table, mib, mib_delta, verdict};

/// The API server's limit on a Secret's data.
const SECRET_LIMIT: usize = 1024 * 1024;
/// The goal: what N large Secrets may add to the operator's RSS.
const GOAL_KIB: u64 = 5 * 1024;

/// What one flood run measured.
pub struct Flood {
    n: usize,
    /// Operator started, one NavigatorToken Ready, no flood.
    before: Memory,
    /// The N Secrets delivered by the watch (a NavigatorToken using the last one is Ready).
    watched: Memory,
    /// A new operator process listing the N Secrets at its start, idle.
    restarted: Memory,
}

pub async fn run(bin: &Path, concurrency: u16, dir: &Path, n: usize) -> Result<Flood> {
    let cluster = Cluster::in_process(dir).await?;
    navigator_token_operator::install_crd(&cluster.client).await?;
    let ns = cluster.namespace("flood", n).await?;
    cluster.put_credentials(&ns, crate::CLIENT_ID, crate::CLIENT_SECRET).await?;
    let stand_in = TokenServer::start(TokenServerConfig { lifetime: Duration::from_secs(3600), ..TokenServerConfig::default() }).await;
    let spawn = |log: &str| {
        Operator::spawn(&operator::Spec {
            bin,
            kubeconfig: &cluster.kubeconfig,
            namespace: &ns,
            cluster_credentials: None,
            token_rate_limit: 0.0,
            concurrency,
            log: dir.join(format!("operator-flood-{n}-{log}.log")),
        })
    };
    let idle_timeout = Duration::from_secs(120);
    let mut operator = spawn("main")?;
    operator.wait_ready(crate::START_TIMEOUT).await?;
    create_token(&cluster, &ns, "probe", crate::cluster::CREDENTIALS, &stand_in.base_url()).await?;
    cluster.wait_ready(&ns, 1, idle_timeout).await?;
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let before = operator.memory()?;

    crate::progress(&format!("flood: creating {n} labelled Secrets of 1 MiB"));
    create_flood(&cluster, &ns, n).await?;
    // Watch events arrive in order: once a NavigatorToken using the last Secret is Ready, the
    // operator has seen them all.
    create_token(&cluster, &ns, "probe-flooded", &flood_name(n - 1), &stand_in.base_url()).await?;
    cluster.wait_ready(&ns, 2, idle_timeout).await?;
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let watched = operator.memory()?;

    crate::progress(&format!("flood: restarting the operator with {n} labelled Secrets in place"));
    operator.stop().await?;
    let mut operator = spawn("restarted")?;
    operator.wait_ready(crate::START_TIMEOUT).await?;
    operator.wait_idle(|| stand_in.request_count() as u64, idle_timeout).await?;
    let restarted = operator.memory()?;
    operator.stop().await?;
    Ok(Flood { n, before, watched, restarted })
}

fn flood_name(i: usize) -> String {
    format!("flood-{i:04}")
}

/// N labelled Secrets of 1 MiB, each with working client credentials (so a NavigatorToken can
/// use it) and a padding key, created 4 at a time.
async fn create_flood(cluster: &Cluster, ns: &str, n: usize) -> Result<()> {
    let api = Api::<Secret>::namespaced(cluster.client.clone(), ns);
    let credentials = crate::CLIENT_ID.len() + crate::CLIENT_SECRET.len();
    // A few bytes spare: the test API server counts the base64 text, padding included.
    let padding = ByteString(vec![b'p'; SECRET_LIMIT - credentials - 16]);
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let data = BTreeMap::from([
                ("client_id".to_owned(), ByteString(crate::CLIENT_ID.into())),
                ("client_secret".to_owned(), ByteString(crate::CLIENT_SECRET.into())),
                ("padding".to_owned(), padding.clone()),
            ]);
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(flood_name(i)),
                    labels: Some(BTreeMap::from([(CREDENTIALS_LABEL.to_owned(), "true".to_owned())])),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..Secret::default()
            };
            async move { api.create(&PostParams::default(), &secret).await.map(drop).map_err(anyhow::Error::from) }
        })
        .buffer_unordered(4)
        .try_collect::<()>()
        .await
}

async fn create_token(cluster: &Cluster, ns: &str, name: &str, credentials: &str, endpoint_url: &str) -> Result<()> {
    let token: NavigatorToken = serde_json::from_value(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "metadata": {"name": name},
        "spec": {
            "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
            "credentialsSecretRef": {"name": credentials},
            "endpoint": {"type": "CSP", "url": endpoint_url},
        },
    }))?;
    Api::<NavigatorToken>::namespaced(cluster.client.clone(), ns).create(&PostParams::default(), &token).await?;
    Ok(())
}

impl Flood {
    pub fn render(&self) -> String {
        let n = self.n;
        let (before, watched, restarted) = (&self.before, &self.watched, &self.restarted);
        let goal = |before: u64, after: u64| format!("< 5 MiB: {}", verdict(after.saturating_sub(before) < GOAL_KIB));
        let mut table = Table::new(&["measurement", "value", "goal"]);
        table.row(&[
            "operator, 1 NavigatorToken Ready: RSS / peak".into(),
            format!("{} / {}", mib(before.rss_kib), mib(before.peak_kib)),
            String::new(),
        ]);
        table.row(&[
            format!("+{n} Secrets of 1 MiB through the watch: RSS (change)"),
            format!("{} ({})", mib(watched.rss_kib), mib_delta(before.rss_kib, watched.rss_kib)),
            goal(before.rss_kib, watched.rss_kib),
        ]);
        table.row(&[
            "same, peak RSS (VmHWM, change)".into(),
            format!("{} ({})", mib(watched.peak_kib), mib_delta(before.peak_kib, watched.peak_kib)),
            String::new(),
        ]);
        table.row(&[
            format!("restart, first list of the {n} Secrets: RSS when idle (change)"),
            format!("{} ({})", mib(restarted.rss_kib), mib_delta(before.rss_kib, restarted.rss_kib)),
            goal(before.rss_kib, restarted.rss_kib),
        ]);
        table.row(&[
            "same, peak RSS (VmHWM; change over the first start's)".into(),
            format!("{} ({})", mib(restarted.peak_kib), mib_delta(before.peak_kib, restarted.peak_kib)),
            goal(before.peak_kib, restarted.peak_kib),
        ]);
        format!("\n## {n} labelled Secrets of 1 MiB in one namespace\n\n{}", table.render())
    }
}
