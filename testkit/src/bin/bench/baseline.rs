//! The do-it-yourself baseline: what a CronJob running a shell script does, per token and
//! refresh one `curl` for the token and one process for the Secret write (`kubectl apply`
//! against a real cluster, `curl` against the test API server, which has no discovery for
//! kubectl). The JSON answer is parsed in-process, which spares the baseline a `jq` per token.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::procfs;

/// Label on the baseline's Secrets.
pub const LABEL: &str = "bench.navigator.dev/baseline=true";
const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";

/// How the Secret is written.
pub enum Writer {
    /// Server-side apply with curl (`PATCH` with `application/apply-patch+yaml`).
    Curl { api_url: String },
    /// `kubectl apply --server-side -f -`.
    Kubectl { kubeconfig: PathBuf },
}

pub struct Baseline {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub namespace: String,
    pub writer: Writer,
    /// Token pipelines at once (a script with `xargs -P`).
    pub concurrency: usize,
}

/// What rounds of the baseline cost.
#[derive(Default)]
pub struct Cost {
    pub wall: Duration,
    pub processes: u64,
    /// CPU of the spawned processes (user + system).
    pub cpu_seconds: f64,
    pub failures: u64,
    pub first_error: Option<String>,
    /// Rounds started, and rounds skipped because the previous one still ran.
    pub rounds: u64,
    pub skipped: u64,
    /// Filled in by the caller, who sees the token endpoint and the API server.
    pub token_requests: usize,
    /// None on a real cluster, whose requests the bench cannot count.
    pub api_requests: Option<u64>,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.processes += other.processes;
        self.cpu_seconds += other.cpu_seconds;
        self.failures += other.failures;
        self.first_error = self.first_error.take().or(other.first_error);
        self.rounds += other.rounds;
    }
}

impl Baseline {
    /// One pass over every token, `concurrency` at a time.
    pub async fn round(&self, names: &[String]) -> Result<Cost> {
        let started = Instant::now();
        let cpu_before = procfs::cpu_seconds("self")?.1;
        let outcomes: Vec<(u64, Result<()>)> =
            futures::stream::iter(names).map(|name| self.refresh(name)).buffer_unordered(self.concurrency).collect().await;
        let mut cost = Cost { rounds: 1, ..Cost::default() };
        for (processes, outcome) in outcomes {
            cost.processes += processes;
            if let Err(e) = outcome {
                cost.failures += 1;
                cost.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        cost.cpu_seconds = procfs::cpu_seconds("self")?.1 - cpu_before;
        cost.wall = started.elapsed();
        Ok(cost)
    }

    /// A CronJob with `concurrencyPolicy: Forbid`: a round every `period` for `window`; a
    /// round due while the previous one still runs is skipped.
    pub async fn cron(&self, names: &[String], period: Duration, window: Duration) -> Result<Cost> {
        let started = Instant::now();
        let mut total = Cost::default();
        let mut schedule = tokio::time::interval(period);
        let mut running: Option<Pin<Box<dyn Future<Output = Result<Cost>> + '_>>> = None;
        loop {
            tokio::select! {
                _ = schedule.tick(), if started.elapsed() < window => {
                    if running.is_some() { total.skipped += 1 } else { running = Some(Box::pin(self.round(names))) }
                }
                cost = async { running.as_mut().unwrap().await }, if running.is_some() => {
                    running = None;
                    total.add(cost?);
                }
                else => break,
            }
        }
        total.wall = started.elapsed();
        Ok(total)
    }

    /// One token: curl for it, then write it. Returns the processes spawned.
    async fn refresh(&self, name: &str) -> (u64, Result<()>) {
        let token = match self.request_token().await {
            Ok(token) => token,
            Err(e) => return (1, Err(e)),
        };
        (2, self.write(name, &token).await)
    }

    async fn request_token(&self) -> Result<String> {
        // Credentials go through curl's config on stdin, not its command line.
        let config = format!("user = \"{}:{}\"\n", self.client_id, self.client_secret);
        let body = run(
            Command::new("curl").args(["-sS", "--fail-with-body", "-K", "-", "-X", "POST", &self.token_url]).args([
                "-d",
                "grant_type=client_credentials",
                "-d",
                &format!("orgId={ORG}"),
            ]),
            config.as_bytes(),
        )
        .await
        .context("token request")?;
        let answer: serde_json::Value = serde_json::from_slice(&body).context("token response is not JSON")?;
        answer["access_token"].as_str().map(str::to_owned).context("no access_token in the token response")
    }

    async fn write(&self, name: &str, token: &str) -> Result<()> {
        let (label, value) = LABEL.split_once('=').unwrap_or((LABEL, ""));
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {label: value}},
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)},
        })
        .to_string();
        let mut command = match &self.writer {
            Writer::Curl { api_url } => {
                let mut c = Command::new("curl");
                c.args(["-sS", "--fail-with-body", "-o", "/dev/null", "-X", "PATCH", "-H", "Content-Type: application/apply-patch+yaml"])
                    .args(["--data-binary", "@-"])
                    .arg(format!("{api_url}/api/v1/namespaces/{}/secrets/{name}?fieldManager=baseline&force=true", self.namespace));
                c
            }
            Writer::Kubectl { kubeconfig } => {
                let mut c = Command::new("kubectl");
                c.args(["apply", "--server-side", "--force-conflicts", "--field-manager=baseline", "-o", "name", "-f", "-"])
                    .env("KUBECONFIG", kubeconfig);
                c
            }
        };
        run(&mut command, secret.as_bytes()).await.context("Secret write").map(drop)
    }
}

/// Runs `command` with `input` on stdin; returns its stdout, or its stderr as the error.
async fn run(command: &mut Command, input: &[u8]) -> Result<Vec<u8>> {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        // Error bodies carry no token: the token endpoint's errors and API Status objects.
        bail!("{} ({})", String::from_utf8_lossy(&output.stderr).trim(), String::from_utf8_lossy(&output.stdout).trim());
    }
    Ok(output.stdout)
}
