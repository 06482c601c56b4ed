//! The operator as a separate process, as in production: spawned from its release binary,
//! observed through its admin port (/readyz, /metrics) and /proc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use navigator_token_operator::api_counter::ApiCounts;
use tokio::process::{Child, Command};

use crate::procfs::{self, Memory};

/// How long the operator must stay without API or token requests to count as idle.
const QUIET: Duration = Duration::from_secs(2);

/// How to start one operator.
pub struct Spec<'a> {
    pub bin: &'a Path,
    pub kubeconfig: &'a Path,
    pub namespace: &'a str,
    /// Run in cluster mode (all namespaces, ClusterNavigatorTokens) with credentials from this
    /// namespace, instead of watching `namespace` only.
    pub cluster_credentials: Option<&'a str>,
    /// --token-rate-limit (0: unlimited).
    pub token_rate_limit: f64,
    pub concurrency: u16,
    /// File for its stderr and stdout.
    pub log: PathBuf,
}

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    pid: u32,
    admin: String,
    http: reqwest::Client,
    /// When it was spawned.
    pub started: Instant,
}

impl Operator {
    pub fn spawn(spec: &Spec) -> Result<Operator> {
        // A free port: bound and released; nothing else on this machine races for it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(&spec.log).with_context(|| format!("creating {}", spec.log.display()))?;
        let started = Instant::now();
        let scope = match spec.cluster_credentials {
            Some(credentials) => ["--cluster-credentials-namespace", credentials],
            None => ["--namespaces", spec.namespace],
        };
        let child = Command::new(spec.bin)
            .arg("run")
            .args(scope)
            .args(["--allowed-endpoint-hosts", "127.0.0.1"])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .args(["--token-rate-limit", &spec.token_rate_limit.to_string()])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .env("KUBECONFIG", spec.kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.bin.display()))?;
        let pid = child.id().context("operator exited at once")?;
        Ok(Operator { child, pid, admin: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), started })
    }

    /// Waits for /readyz to answer 200; returns the time since spawn.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        while self.started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!("operator exited with {status} before it was ready (see its log)");
            }
            let ready = self.http.get(format!("{}/readyz", self.admin)).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(self.started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(anyhow!("operator not ready within {timeout:?}"))
    }

    /// Waits until neither its API requests nor `token_requests()` changed for a while;
    /// returns when they last changed (None: still busy at `timeout`).
    pub async fn wait_idle(&mut self, token_requests: impl Fn() -> u64, timeout: Duration) -> Result<Option<Instant>> {
        let deadline = Instant::now() + timeout;
        let mut last = (self.scrape().await?.total(), token_requests());
        let mut changed_at = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = (self.scrape().await?.total(), token_requests());
            if now != last {
                (last, changed_at) = (now, Instant::now());
            } else if changed_at.elapsed() >= QUIET {
                return Ok(Some(changed_at));
            }
        }
        Ok(None)
    }

    pub fn memory(&self) -> Result<Memory> {
        procfs::memory(self.pid)
    }

    pub fn cpu_seconds(&self) -> Result<f64> {
        Ok(procfs::cpu_seconds(&self.pid.to_string())?.0)
    }

    /// Its API request counter from /metrics.
    pub async fn scrape(&self) -> Result<ApiCounts> {
        Ok(parse_api_counts(&self.metrics_text().await?))
    }

    /// The whole /metrics exposition.
    pub async fn metrics_text(&self) -> Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.admin)).send().await?.error_for_status()?.text().await?)
    }

    /// SIGTERM, then waits for it to exit; returns how long that took.
    pub async fn stop(mut self) -> Result<Duration> {
        let started = Instant::now();
        Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().await?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.context("operator ignored SIGTERM")??;
        if !status.success() {
            bail!("operator exited with {status} on SIGTERM");
        }
        Ok(started.elapsed())
    }
}

/// `navigator_kube_api_requests_total` by (verb, resource), from the text exposition.
fn parse_api_counts(text: &str) -> ApiCounts {
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("navigator_kube_api_requests_total{")) {
        let Some((labels, value)) = line.split_once("} ") else { continue };
        let label = |name: &str| labels.split(&format!("{name}=\"")).nth(1).and_then(|v| v.split('"').next()).unwrap_or("").to_owned();
        counts.insert((label("verb"), label("resource")), value.trim().parse().unwrap_or(0));
    }
    ApiCounts(counts)
}

/// "patch secrets 1.00, patch navigatortokens/status 1.00, …", per `per` if given.
pub fn describe(counts: &ApiCounts, per: Option<u64>) -> String {
    if counts.0.is_empty() {
        return "none".to_owned();
    }
    let value = |n: u64| per.map_or_else(|| n.to_string(), |per| format_ratio(n as f64 / per.max(1) as f64));
    counts.0.iter().map(|((verb, resource), n)| format!("{verb} {resource} {}", value(*n))).collect::<Vec<_>>().join(", ")
}

pub fn format_ratio(value: f64) -> String {
    format!("{value:.2}")
}
