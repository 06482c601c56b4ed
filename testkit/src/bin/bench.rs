//! `bench`: the operator against the do-it-yourself baseline (a CronJob-style loop spawning curl
//! per token), for N tokens.
//!
//! ```text
//! cargo build --release --bin navigator-token-operator
//! cargo run --release -p testkit --bin bench -- --tokens 100,1000
//! ```
//!
//! For each N, against a fresh in-process API server (or a real cluster with `--kubeconfig`) and
//! the token endpoint stand-in on loopback, with the operator as a separate process:
//!
//! 1. creation: N NavigatorTokens (+ one credentials Secret) until every Secret holds a valid
//!    token, per-token latency, token requests (must be N), the operator's API requests;
//! 2. memory and CPU: peak RSS, CPU seconds, RSS per NavigatorToken over an empty operator;
//! 3. restart (SIGTERM, new process): token requests (must be 0), API requests, time to ready
//!    (goal: 1.5× plain paginated lists of the same objects, taken just before) and to idle;
//! 4. unrelated Secrets: RSS change after adding many Secrets the operator must not cache;
//! 5. steady state with short lifetimes: how long before expiry each refresh landed, and
//!    whether any Secret held an expired token;
//! 6. the baseline: one full round, then rounds every lifetime/2 over the same window;
//! 7. rate limiting: N tokens at once through an endpoint limited to R requests per second.
//!
//! With `--fanout N` it runs instead one ClusterNavigatorToken fanning out to N namespaces
//! (see `bench/fanout.rs`); with `--credentials-flood N`, a tenant's N labelled credentials
//! Secrets of 1 MiB and the operator's RSS (see `bench/flood.rs`).
//!
//! Each goal is printed as met or missed with its margin; with two or more N from 10,000 up, the
//! peak RSS per additional NavigatorToken between the smallest and the largest too.
//!
//! Results are printed as Markdown tables. The exit status is 1 when token requests differ
//! from N after a creation or from 0 after the restart (timings are only reported), and 2 when
//! the bench itself fails.

// A binary's root looks for modules next to itself; these live in bench/ to keep bin/ tidy.
#[path = "bench/baseline.rs"]
mod baseline;
#[path = "bench/cluster.rs"]
mod cluster;
#[path = "bench/fanout.rs"]
mod fanout;
#[path = "bench/flood.rs"]
mod flood;
#[path = "bench/operator.rs"]
mod operator;
#[path = "bench/procfs.rs"]
mod procfs;
#[path = "bench/ratelimit.rs"]
mod ratelimit;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/tracker.rs"]
mod tracker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, ValueEnum};
use testkit::token_server::{Endpoint, TokenServer, TokenServerConfig};

use crate::baseline::{Baseline, Cost, Writer};
use crate::cluster::{Cluster, PlainLists};
use navigator_token_operator::api_counter::ApiCounts;
use navigator_token_operator::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

use crate::operator::{Operator, describe, format_ratio};
use crate::procfs::Memory;
use crate::ratelimit::RateLimitedEndpoint;
use crate::report::{Table, goal, mib, mib_delta, mib_goal, min, percentile, secs, secs_f, times, verdict};
use crate::tracker::{Tracker, Window};

/// Token lifetime outside the steady-state phase: long enough that nothing refreshes.
const LONG_LIFETIME: Duration = Duration::from_secs(3600);
/// Credentials the stand-in accepts.
const CLIENT_ID: &str = "testkit-client";
const CLIENT_SECRET: &str = "testkit-secret";
/// Bound on waiting for the operator to start or to go quiet.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// The operator's list page size (`watch` in src/controller/watches.rs): the bench's plain
/// lists, the floor of a restart's readiness, use the same.
const OPERATOR_PAGE_SIZE: u32 = 100;
/// A restart is ready within this many times the plain lists of its objects.
const READY_OVER_LISTS: f64 = 1.5;
/// Growth of the peak RSS per additional NavigatorToken, from 10,000 up, at most (KiB).
const KIB_PER_TOKEN: f64 = 1.5;

#[derive(Parser)]
#[command(about = "Benchmarks navigator-token-operator against a curl-per-token CronJob baseline")]
struct Cli {
    /// Token counts, comma-separated; each is a separate run.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    tokens: Vec<usize>,
    /// The operator binary (`cargo build --release --bin navigator-token-operator`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/navigator-token-operator"))]
    operator_bin: PathBuf,
    /// Run against the current context of this kubeconfig instead of the in-process API
    /// server (the bench creates and deletes its own namespaces and applies the CRD).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Token lifetime in the steady-state phase, seconds [default: 30, or 3.5× the creation
    /// time if longer, so that one refresh wave fits well inside a third of a lifetime].
    #[arg(long)]
    short_lifetime: Option<u64>,
    /// Length of the steady-state window, seconds [default: 70, or 2.3 lifetimes if longer].
    #[arg(long)]
    steady_window: Option<u64>,
    /// Requests per second the rate-limited endpoint allows, and the operator's
    /// --token-rate-limit in that phase [default: N/20, within 5..=100].
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Unrelated Secrets added in the memory check.
    #[arg(long, default_value_t = 10_000)]
    unrelated_secrets: usize,
    /// Baseline token pipelines (curl + write) running at once.
    #[arg(long, default_value_t = 8)]
    baseline_concurrency: usize,
    /// The operator's --concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Phases to leave out (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Phase>,
    /// Instead of the runs above: one ClusterNavigatorToken fanning out to this many namespaces
    /// (time until all hold the token, API requests per refresh, peak RSS; about 2 minutes).
    #[arg(long)]
    fanout: Option<usize>,
    /// Instead of the runs above: this many Secrets of 1 MiB labelled as credentials in the
    /// operator's namespace (its RSS before, after the watch delivered them, after a restart).
    #[arg(long)]
    credentials_flood: Option<usize>,
}

/// Phases that can be skipped.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Unrelated,
    Steady,
    Baseline,
    Ratelimit,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    // reqwest and kube use rustls; ring is the provider compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run_all(&cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: an invariant was violated (token requests after creation or restart); see above");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs every N; returns whether all invariants held.
async fn run_all(cli: &Cli) -> Result<bool> {
    if !cli.operator_bin.is_file() {
        return Err(anyhow!(
            "no operator binary at {}; build it with `cargo build --release --bin navigator-token-operator` or pass --operator-bin",
            cli.operator_bin.display()
        ));
    }
    let dir = std::env::temp_dir().join(format!("navigator-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    progress(&format!("operator logs and kubeconfig in {}", dir.display()));
    println!("{}", machine_description());
    if let Some(n) = cli.fanout {
        let outcome =
            fanout::run(&cli.operator_bin, cli.concurrency, &dir, n).await.with_context(|| format!("fan-out to {n} namespaces"))?;
        println!("{}", outcome.render());
        return Ok(outcome.invariants_hold());
    }
    if let Some(n) = cli.credentials_flood {
        let outcome = flood::run(&cli.operator_bin, cli.concurrency, &dir, n.max(1))
            .await
            .with_context(|| format!("{n} labelled Secrets of 1 MiB"))?;
        println!("{}", outcome.render());
        // A missed memory goal is reported in the table; only a failed run is an error.
        return Ok(true);
    }
    let mut all_held = true;
    let mut peaks = Vec::new();
    for &n in &cli.tokens {
        // A fresh API server per N, so that one run's objects never weigh on the next.
        let cluster = match &cli.kubeconfig {
            Some(path) => Cluster::external(path, &cli.operator_bin).await?,
            None => Cluster::in_process(&dir).await?,
        };
        let outcome = tokio::select! {
            outcome = run_one(cli, &cluster, n, &dir) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        // Namespaces on a real cluster go whatever happened; operators were killed on drop.
        cluster.cleanup().await;
        let outcome = outcome.with_context(|| format!("run with N = {n}"))?;
        println!("{}", outcome.render());
        all_held &= outcome.invariants_hold();
        peaks.push((n, outcome.creation.memory.peak_kib, outcome.restart.memory.peak_kib));
    }
    if let Some(table) = growth(&peaks) {
        println!("\n## Peak RSS per additional NavigatorToken\n\n{}", table.render());
    }
    Ok(all_held)
}

/// Everything measured for one N.
struct Outcome {
    n: usize,
    creation: Creation,
    restart: Restart,
    unrelated: Option<Unrelated>,
    steady: Option<Steady>,
    baseline: Option<BaselineRun>,
    rate_limit: Option<RateLimit>,
}

struct Creation {
    ready_empty: Duration,
    rss_empty: Memory,
    cpu_empty: f64,
    create: Duration,
    all_valid: Duration,
    all_ready: Duration,
    latencies: Vec<f64>,
    token_requests: usize,
    api: ApiCounts,
    idle: Option<Duration>,
    memory: Memory,
    cpu: f64,
    scrape: Scrape,
}

/// One full /metrics scrape with N NavigatorTokens: what the per-token series cost.
struct Scrape {
    bytes: usize,
    per_token_series: usize,
    took: Duration,
    /// Peak RSS after it (the scrape's allocations included).
    memory: Memory,
}

struct Restart {
    shutdown: Duration,
    /// Plain lists of the same objects from the same API server, just before the restart.
    lists: PlainLists,
    ready: Duration,
    idle: Option<Duration>,
    token_requests: usize,
    api: ApiCounts,
    memory: Memory,
}

struct Unrelated {
    count: usize,
    before: Memory,
    after: Memory,
}

struct Steady {
    lifetime: Duration,
    window: Duration,
    seen: Window,
    token_requests: usize,
    api: ApiCounts,
    cpu: f64,
    /// Peak memory of the restarted operator over restart, unrelated Secrets and steady state.
    memory: Memory,
}

struct BaselineRun {
    round: Cost,
    steady: Option<(Cost, Window)>,
}

struct RateLimit {
    rate: f64,
    all_valid: Duration,
    all_ready: Duration,
    received: usize,
    rejected: u64,
    busiest_second: usize,
    token_requests: usize,
    memory: Memory,
    cpu: f64,
}

/// The shared world of one N: the cluster, the token endpoint and the names.
struct World<'a> {
    cli: &'a Cli,
    cluster: &'a Cluster,
    dir: &'a Path,
    n: usize,
    names: Vec<String>,
    stand_in: TokenServer,
    /// Namespace of the operator's NavigatorTokens in phases 1–5.
    ns: String,
}

impl World<'_> {
    fn operator(&self, namespace: &str, token_rate_limit: f64, log: &str) -> Result<Operator> {
        Operator::spawn(&operator::Spec {
            bin: &self.cli.operator_bin,
            kubeconfig: &self.cluster.kubeconfig,
            namespace,
            cluster_credentials: None,
            token_rate_limit,
            concurrency: self.cli.concurrency,
            log: self.dir.join(format!("operator-{}-{log}.log", self.n)),
        })
    }

    /// Generous bound for work proportional to N.
    fn timeout_for(&self, per_token: Duration) -> Duration {
        Duration::from_secs(120) + per_token * self.n as u32
    }

    /// When the operator last was busy before going quiet (None: it never did in time).
    async fn wait_idle(&self, operator: &mut Operator) -> Result<Option<Instant>> {
        operator.wait_idle(|| self.stand_in.request_count() as u64, self.timeout_for(Duration::from_millis(20))).await
    }
}

async fn run_one(cli: &Cli, cluster: &Cluster, n: usize, dir: &Path) -> Result<Outcome> {
    progress(&format!("N = {n}: starting"));
    let stand_in = TokenServer::start(TokenServerConfig { lifetime: LONG_LIFETIME, ..TokenServerConfig::default() }).await;
    let ns = cluster.namespace("bench", n).await?;
    let names = (0..n).map(|i| format!("nvt-{i:05}")).collect();
    let world = World { cli, cluster, dir, n, names, stand_in, ns: ns.clone() };
    cluster.put_credentials(&ns, CLIENT_ID, CLIENT_SECRET).await?;
    let tracker = Tracker::start(cluster.client.clone(), &ns, &managed_selector()).await?;

    let (operator, creation) = creation(&world, &ns, &tracker).await?;
    let (mut operator, restart) = restart(&world, operator).await?;
    let unrelated = if cli.skip.contains(&Phase::Unrelated) { None } else { Some(unrelated(&world, &ns, &mut operator).await?) };
    let lifetime =
        Duration::from_secs(cli.short_lifetime.unwrap_or_else(|| (creation.all_valid.as_secs_f64() * 3.5).ceil().max(30.0) as u64));
    let window = Duration::from_secs(cli.steady_window.unwrap_or_else(|| (lifetime.as_secs_f64() * 2.3).ceil().max(70.0) as u64));
    let steady =
        if cli.skip.contains(&Phase::Steady) { None } else { Some(steady(&world, &ns, &tracker, &mut operator, lifetime, window).await?) };
    operator.stop().await?;
    drop(tracker);

    let baseline = if cli.skip.contains(&Phase::Baseline) {
        None
    } else {
        Some(baseline(&world, lifetime, (!cli.skip.contains(&Phase::Steady)).then_some(window)).await?)
    };
    let rate_limit = if cli.skip.contains(&Phase::Ratelimit) { None } else { Some(rate_limit(&world).await?) };
    progress(&format!("N = {n}: done"));
    Ok(Outcome { n, creation, restart, unrelated, steady, baseline, rate_limit })
}

/// Phases 1–3: an empty operator, then N NavigatorTokens created at once.
async fn creation(world: &World<'_>, ns: &str, tracker: &Tracker) -> Result<(Operator, Creation)> {
    let n = world.n;
    let mut operator = world.operator(ns, 0.0, "main")?;
    let ready_empty = operator.wait_ready(START_TIMEOUT).await?;
    world.wait_idle(&mut operator).await?;
    let rss_empty = operator.memory()?;
    let cpu_empty = operator.cpu_seconds()?;
    let scrape_empty = operator.scrape().await?;

    progress(&format!("N = {n}: creating {n} NavigatorTokens"));
    let tokens_before = world.stand_in.request_count();
    let started = Instant::now();
    let created = world.cluster.create_tokens(ns, &world.names, &world.stand_in.base_url()).await?;
    let create = started.elapsed();
    let valid_at = tracker.wait_for(n, "a valid token", world.timeout_for(Duration::from_millis(100)), |exp, now| exp > now).await?;
    let ready_at = world.cluster.wait_ready(ns, n, world.timeout_for(Duration::from_millis(100))).await?;
    let idle = world.wait_idle(&mut operator).await?;
    // Memory and CPU first: a /metrics scrape allocates too.
    let memory = operator.memory()?;
    let cpu = operator.cpu_seconds()? - cpu_empty;
    let api = operator.scrape().await?.since(&scrape_empty);
    let scrape_started = Instant::now();
    let text = operator.metrics_text().await?;
    let scrape = Scrape {
        bytes: text.len(),
        per_token_series: text.lines().filter(|l| l.starts_with("navigator_token_") && l.contains("name=\"")).count(),
        took: scrape_started.elapsed(),
        memory: operator.memory()?,
    };
    let token_requests = world.stand_in.request_count() - tokens_before;
    let first = tracker.first_token_at();
    let latencies = created.iter().filter_map(|(name, at)| Some(first.get(name)?.saturating_duration_since(*at).as_secs_f64())).collect();
    let creation = Creation {
        ready_empty,
        rss_empty,
        cpu_empty,
        create,
        all_valid: valid_at - started,
        all_ready: ready_at - started,
        latencies,
        token_requests,
        api,
        idle: idle.map(|at| at.saturating_duration_since(started)),
        memory,
        cpu,
        scrape,
    };
    progress(&format!("N = {n}: all valid after {}, {token_requests} token requests", secs(creation.all_valid)));
    Ok((operator, creation))
}

/// Phase 4: SIGTERM and a new process with N valid tokens in place.
async fn restart(world: &World<'_>, operator: Operator) -> Result<(Operator, Restart)> {
    progress(&format!("N = {}: restarting the operator", world.n));
    let shutdown = operator.stop().await?;
    let lists = world.cluster.plain_lists(&world.ns, OPERATOR_PAGE_SIZE).await?;
    let tokens_before = world.stand_in.request_count();
    let mut operator = world.operator(&world.ns, 0.0, "restarted")?;
    let ready = operator.wait_ready(START_TIMEOUT).await?;
    let idle = world.wait_idle(&mut operator).await?.map(|at| at.saturating_duration_since(operator.started));
    let memory = operator.memory()?;
    let api = operator.scrape().await?;
    let token_requests = world.stand_in.request_count() - tokens_before;
    Ok((operator, Restart { shutdown, lists, ready, idle, token_requests, api, memory }))
}

/// Phase 6: many Secrets without the operator's labels in its namespace.
async fn unrelated(world: &World<'_>, ns: &str, operator: &mut Operator) -> Result<Unrelated> {
    let count = world.cli.unrelated_secrets;
    progress(&format!("N = {}: adding {count} unrelated Secrets", world.n));
    let before = operator.memory()?;
    world.cluster.create_unrelated_secrets(ns, count).await?;
    world.wait_idle(operator).await?;
    let after = operator.memory()?;
    Ok(Unrelated { count, before, after })
}

/// Phase 5: every token re-issued with a short lifetime, then refreshes watched for a window.
async fn steady(
    world: &World<'_>,
    ns: &str,
    tracker: &Tracker,
    operator: &mut Operator,
    lifetime: Duration,
    window: Duration,
) -> Result<Steady> {
    let n = world.n;
    progress(&format!("N = {n}: steady state, lifetime {}, window {}", secs(lifetime), secs(window)));
    world.stand_in.set_lifetime(lifetime);
    world.cluster.force_refresh(ns, &world.names).await?;
    let limit = lifetime.as_secs() + 1;
    tracker
        .wait_for(n, "a short-lived token", world.timeout_for(Duration::from_millis(100)), |exp, now| {
            exp > now && exp <= now + limit as i64
        })
        .await?;
    // Status writes trail the Secret writes; the window starts once the forced wave is over.
    world.wait_idle(operator).await?;
    tracker.start_window();
    // API requests are counted inside the token-request count (started after it, ended before
    // it), so that a refresh straddling an edge cannot add writes without its token request.
    let tokens_before = world.stand_in.request_count();
    let scrape_before = operator.scrape().await?;
    let cpu_before = operator.cpu_seconds()?;
    tokio::time::sleep(window).await;
    let seen = tracker.end_window();
    let cpu = operator.cpu_seconds()? - cpu_before;
    let api = operator.scrape().await?.since(&scrape_before);
    let token_requests = world.stand_in.request_count() - tokens_before;
    let memory = operator.memory()?;
    world.stand_in.set_lifetime(LONG_LIFETIME);
    Ok(Steady { lifetime, window, seen, token_requests, api, cpu, memory })
}

/// Phase 8: the curl loop, one full round, then a CronJob schedule over the steady window.
async fn baseline(world: &World<'_>, lifetime: Duration, window: Option<Duration>) -> Result<BaselineRun> {
    let n = world.n;
    progress(&format!("N = {n}: baseline round ({} pipelines at once)", world.cli.baseline_concurrency));
    let ns = world.cluster.namespace("baseline", n).await?;
    let tracker = Tracker::start(world.cluster.client.clone(), &ns, baseline::LABEL).await?;
    let writer = match &world.cluster.server {
        Some(server) => Writer::Curl { api_url: server.url() },
        None => Writer::Kubectl { kubeconfig: world.cluster.kubeconfig.clone() },
    };
    let baseline = Baseline {
        token_url: world.stand_in.url(Endpoint::Csp),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        namespace: ns,
        writer,
        concurrency: world.cli.baseline_concurrency,
    };
    world.stand_in.set_lifetime(LONG_LIFETIME);
    let (tokens_before, api_before) = (world.stand_in.request_count(), world.cluster.secret_writes());
    let mut round = baseline.round(&world.names).await?;
    round.token_requests = world.stand_in.request_count() - tokens_before;
    round.api_requests = world.cluster.secret_writes().zip(api_before).map(|(after, before)| after - before);
    if round.failures > 0 {
        return Err(anyhow!("baseline: {} of {n} tokens failed, first: {}", round.failures, round.first_error.unwrap_or_default()));
    }
    tracker.wait_for(n, "a valid token", Duration::from_secs(60), |exp, now| exp > now).await?;
    let Some(window) = window else { return Ok(BaselineRun { round, steady: None }) };
    progress(&format!("N = {n}: baseline CronJob every {} for {}", secs(lifetime / 2), secs(window)));
    world.stand_in.set_lifetime(lifetime);
    tracker.start_window();
    let (tokens_before, api_before) = (world.stand_in.request_count(), world.cluster.secret_writes());
    let mut cost = baseline.cron(&world.names, lifetime / 2, window).await?;
    cost.token_requests = world.stand_in.request_count() - tokens_before;
    cost.api_requests = world.cluster.secret_writes().zip(api_before).map(|(after, before)| after - before);
    let seen = tracker.end_window();
    world.stand_in.set_lifetime(LONG_LIFETIME);
    Ok(BaselineRun { round, steady: Some((cost, seen)) })
}

/// Phase 7: N tokens at once through an endpoint that allows R requests per second.
async fn rate_limit(world: &World<'_>) -> Result<RateLimit> {
    let n = world.n;
    let rate = world.cli.rate_limit.unwrap_or_else(|| (n as f64 / 20.0).clamp(5.0, 100.0));
    progress(&format!("N = {n}: rate limit {rate}/s"));
    let ns = world.cluster.namespace("ratelimit", n).await?;
    world.cluster.put_credentials(&ns, CLIENT_ID, CLIENT_SECRET).await?;
    let tracker = Tracker::start(world.cluster.client.clone(), &ns, &managed_selector()).await?;
    let proxy = RateLimitedEndpoint::start(&world.stand_in.base_url(), rate).await?;
    let mut operator = world.operator(&ns, rate, "ratelimit")?;
    operator.wait_ready(START_TIMEOUT).await?;
    world.wait_idle(&mut operator).await?;
    let cpu_before = operator.cpu_seconds()?;
    let tokens_before = world.stand_in.request_count();
    let started = Instant::now();
    world.cluster.create_tokens(&ns, &world.names, &proxy.url()).await?;
    let timeout = Duration::from_secs_f64(n as f64 / rate) + world.timeout_for(Duration::from_millis(20));
    let valid_at = tracker.wait_for(n, "a valid token", timeout, |exp, now| exp > now).await?;
    let ready_at = world.cluster.wait_ready(&ns, n, timeout).await?;
    world.wait_idle(&mut operator).await?;
    let memory = operator.memory()?;
    let cpu = operator.cpu_seconds()? - cpu_before;
    let token_requests = world.stand_in.request_count() - tokens_before;
    operator.stop().await?;
    Ok(RateLimit {
        rate,
        all_valid: valid_at - started,
        all_ready: ready_at - started,
        received: proxy.received(),
        rejected: proxy.rejected(),
        busiest_second: proxy.busiest_second(),
        token_requests,
        memory,
        cpu,
    })
}

impl Outcome {
    /// The invariants the exit status depends on.
    fn invariants_hold(&self) -> bool {
        self.creation.token_requests == self.n
            && self.restart.token_requests == 0
            && self.rate_limit.as_ref().is_none_or(|r| r.token_requests == self.n)
    }

    fn render(&self) -> String {
        let n = self.n;
        let c = &self.creation;
        let r = &self.restart;
        let mut out = format!("\n## N = {n}\n\n");
        let mut table = Table::new(&["#", "measurement", "value", "goal"]);
        let mut row = |id: &str, what: &str, value: String, goal: String| table.row(&[id.into(), what.into(), value, goal]);

        row("1", "create N NavigatorTokens (API calls, 16 in flight)", secs(c.create), String::new());
        row("1", "creation start → all N Secrets hold a valid token", secs(c.all_valid), String::new());
        row("1", "creation start → all N Ready=True", secs(c.all_ready), String::new());
        row(
            "1",
            "per token, creation → Secret holds a token: p50 / p99 / max",
            format!(
                "{} / {} / {}",
                secs_f(percentile(&c.latencies, 50.0)),
                secs_f(percentile(&c.latencies, 99.0)),
                secs_f(percentile(&c.latencies, 100.0))
            ),
            String::new(),
        );
        row("2", "token-endpoint requests", c.token_requests.to_string(), format!("= N: {}", verdict(c.token_requests == n)));
        row("2", "operator API requests per issued token", describe(&c.api, Some(n as u64)), String::new());
        row("2", "operator API requests, total", c.api.total().to_string(), String::new());
        row(
            "3",
            "operator with 0 tokens: ready after / RSS / CPU",
            format!("{} / {} / {:.2} s", secs(c.ready_empty), mib(c.rss_empty.rss_kib), c.cpu_empty),
            String::new(),
        );
        let peak_goal = |peak_kib: u64| match n {
            1000 => mib_goal(peak_kib, 20),
            10_000 => mib_goal(peak_kib, 40),
            100_000 => mib_goal(peak_kib, 200),
            _ => String::new(),
        };
        row("3", "operator peak RSS (VmHWM), creation run", mib(c.memory.peak_kib), peak_goal(c.memory.peak_kib));
        row("3", "operator CPU for the creation (until idle)", format!("{:.2} s", c.cpu), String::new());
        row(
            "3",
            "RSS at steady state, all Ready / per NavigatorToken over 0 tokens",
            format!("{} / {:.1} KiB", mib(c.memory.rss_kib), (c.memory.rss_kib as f64 - c.rss_empty.rss_kib as f64) / n as f64),
            String::new(),
        );
        row("3", "creation start → operator idle", secs_f(c.idle.map(|d| d.as_secs_f64())), String::new());
        row(
            "3",
            "one /metrics scrape: bytes / per-token series / time / peak RSS after",
            format!(
                "{:.1} KiB / {} / {} / {}",
                c.scrape.bytes as f64 / 1024.0,
                c.scrape.per_token_series,
                secs(c.scrape.took),
                mib(c.scrape.memory.peak_kib)
            ),
            String::new(),
        );
        row("4", "restart: SIGTERM → exited", secs(r.shutdown), String::new());
        row("4", "restart: token requests", r.token_requests.to_string(), format!("= 0: {}", verdict(r.token_requests == 0)));
        row("4", "restart: API requests (all from start)", describe(&r.api, None), String::new());
        row(
            "4",
            "restart: API writes / GETs",
            format!("{} / {}", r.api.writes(), r.api.verb("get")),
            format!("writes = 0: {}", verdict(r.api.writes() == 0)),
        );
        let l = &r.lists;
        row(
            "4",
            &format!(
                "plain lists, pages of {OPERATOR_PAGE_SIZE}: {} NavigatorTokens and {} managed Secrets at once / each alone",
                l.tokens, l.secrets
            ),
            format!("{} / {} + {}", secs(l.concurrent), secs(l.tokens_alone), secs(l.secrets_alone)),
            String::new(),
        );
        let ready_bound = l.concurrent.as_secs_f64() * READY_OVER_LISTS;
        row(
            "4",
            "restart: spawn → /readyz 200",
            format!("{} ({})", secs(r.ready), times(r.ready.as_secs_f64(), l.concurrent.as_secs_f64())),
            goal(
                &format!("≤ {READY_OVER_LISTS} × the lists at once = {ready_bound:.2} s"),
                ready_bound - r.ready.as_secs_f64(),
                &format!("{:.2} s", (ready_bound - r.ready.as_secs_f64()).abs()),
            ),
        );
        row("4", "restart: spawn → idle", secs_f(r.idle.map(|d| d.as_secs_f64())), String::new());
        row(
            "4",
            "restart: RSS after idle / peak",
            format!("{} / {}", mib(r.memory.rss_kib), mib(r.memory.peak_kib)),
            peak_goal(r.memory.peak_kib),
        );
        if let Some(u) = &self.unrelated {
            let delta = u.after.rss_kib as i64 - u.before.rss_kib as i64;
            row(
                "6",
                &format!("+{} unrelated Secrets: RSS before → after", u.count),
                format!("{} → {} ({})", mib(u.before.rss_kib), mib(u.after.rss_kib), mib_delta(u.before.rss_kib, u.after.rss_kib)),
                format!("< 5 MiB: {}", verdict(delta < 5 * 1024)),
            );
        }
        if let Some(s) = &self.steady {
            let refreshes = s.seen.leads.len();
            let late = s.seen.leads.iter().filter(|l| **l < 0.0).count();
            row("5", "steady state: token lifetime / window", format!("{} / {}", secs(s.lifetime), secs(s.window)), String::new());
            row("5", "steady state: refreshes seen / token requests", format!("{refreshes} / {}", s.token_requests), String::new());
            row(
                "5",
                "refresh landed before the previous token's expiry: min / p50",
                format!("{} / {}", secs_f(min(&s.seen.leads)), secs_f(percentile(&s.seen.leads, 50.0))),
                String::new(),
            );
            row("5", "refreshes that landed after expiry", late.to_string(), format!("= 0: {}", verdict(late == 0)));
            row(
                "5",
                "Secrets seen holding an expired token (confirmed by GET)",
                s.seen.expired.len().to_string(),
                format!("= 0: {}", verdict(s.seen.expired.is_empty())),
            );
            let per = s.token_requests.max(1) as u64;
            row("5", "operator API requests per routine refresh", describe(&s.api, Some(per)), String::new());
            let writes = s.api.writes() as f64 / per as f64;
            let gets = s.api.verb("get");
            row(
                "5",
                "API writes per refresh / GETs in the window",
                format!("{} / {gets}", format_ratio(writes)),
                format!("≤ 2 and 0: {}", verdict(writes <= 2.0 && gets == 0)),
            );
            row("5", "operator CPU in the window", format!("{:.2} s", s.cpu), String::new());
            row("5", "restarted operator peak RSS (restart, unrelated, steady)", mib(s.memory.peak_kib), String::new());
        }
        if let Some(rl) = &self.rate_limit {
            let bound = Duration::from_secs_f64(n as f64 / rl.rate) + Duration::from_secs(60);
            row("7", "rate limit R (endpoint and --token-rate-limit)", format!("{}/s", rl.rate), String::new());
            row(
                "7",
                "creation start → all valid / all Ready",
                format!("{} / {}", secs(rl.all_valid), secs(rl.all_ready)),
                format!("≤ N/R + 60 s = {}: {}", secs(bound), verdict(rl.all_ready <= bound)),
            );
            row(
                "7",
                "endpoint: requests received / answered 429 / busiest second",
                format!("{} / {} / {}", rl.received, rl.rejected, rl.busiest_second),
                format!("no 429s: {}", verdict(rl.rejected == 0)),
            );
            row(
                "7",
                "token requests reaching the stand-in",
                rl.token_requests.to_string(),
                format!("= N: {}", verdict(rl.token_requests == n)),
            );
            row("7", "operator peak RSS / CPU", format!("{} / {:.2} s", mib(rl.memory.peak_kib), rl.cpu), String::new());
        }
        out += &table.render();

        if let Some(b) = &self.baseline {
            out += &format!("\n### N = {n}: operator vs. baseline\n\n");
            out += &self.comparison(b).render();
        }
        out
    }

    /// Operator against baseline, side by side.
    fn comparison(&self, b: &BaselineRun) -> Table {
        let n = self.n as f64;
        let c = &self.creation;
        let mut table = Table::new(&["measurement", "operator", "baseline", "baseline ÷ operator"]);
        let mut row = |what: &str, operator: String, baseline: String, ratio: String| table.row(&[what.into(), operator, baseline, ratio]);
        let round = &b.round;
        row(
            "N first tokens: wall time",
            secs(c.all_valid),
            format!("{} (one round)", secs(round.wall)),
            times(round.wall.as_secs_f64(), c.all_valid.as_secs_f64()),
        );
        row(
            "N first tokens: processes spawned",
            "1 (long-running)".into(),
            round.processes.to_string(),
            times(round.processes as f64, 1.0),
        );
        row(
            "N first tokens: token requests",
            c.token_requests.to_string(),
            round.token_requests.to_string(),
            times(round.token_requests as f64, c.token_requests as f64),
        );
        row(
            "N first tokens: API requests (per token)",
            format!("{} ({})", c.api.total(), format_ratio(c.api.total() as f64 / n)),
            round.api_requests.map_or("n/a".into(), |r| format!("{r} ({})", format_ratio(r as f64 / n))),
            round.api_requests.map_or("n/a".into(), |r| times(r as f64, c.api.total() as f64)),
        );
        row("N first tokens: CPU seconds", format!("{:.2}", c.cpu), format!("{:.2}", round.cpu_seconds), times(round.cpu_seconds, c.cpu));
        if let (Some(s), Some((cost, seen))) = (&self.steady, &b.steady) {
            row(
                "steady window: rounds run / skipped (Forbid)",
                "n/a".into(),
                format!("{} / {} (every {})", cost.rounds, cost.skipped, secs(s.lifetime / 2)),
                String::new(),
            );
            row("steady window: processes spawned", "0".into(), cost.processes.to_string(), String::new());
            row(
                "steady window: token requests",
                s.token_requests.to_string(),
                cost.token_requests.to_string(),
                times(cost.token_requests as f64, s.token_requests as f64),
            );
            row(
                "steady window: API requests",
                s.api.total().to_string(),
                cost.api_requests.map_or("n/a".into(), |r| r.to_string()),
                cost.api_requests.map_or("n/a".into(), |r| times(r as f64, s.api.total() as f64)),
            );
            row("steady window: CPU seconds", format!("{:.2}", s.cpu), format!("{:.2}", cost.cpu_seconds), times(cost.cpu_seconds, s.cpu));
            row(
                "steady window: Secrets that held an expired token",
                s.seen.expired.len().to_string(),
                seen.expired.len().to_string(),
                String::new(),
            );
            row(
                "steady window: refresh landed before expiry, min / p50",
                format!("{} / {}", secs_f(min(&s.seen.leads)), secs_f(percentile(&s.seen.leads, 50.0))),
                format!("{} / {}", secs_f(min(&seen.leads)), secs_f(percentile(&seen.leads, 50.0))),
                String::new(),
            );
        }
        table
    }
}

/// Peak RSS growth per additional NavigatorToken from the smallest N of at least 10,000 to the
/// largest, at creation and after the restart (None: fewer than two such N).
fn growth(peaks: &[(usize, u64, u64)]) -> Option<Table> {
    let from = peaks.iter().filter(|p| p.0 >= 10_000).min_by_key(|p| p.0)?;
    let to = peaks.iter().max_by_key(|p| p.0).filter(|to| to.0 > from.0)?;
    let mut table = Table::new(&["phase", "peak RSS", "per additional NavigatorToken", "goal"]);
    for (phase, before, after) in [("creation", from.1, to.1), ("after the restart", from.2, to.2)] {
        let per_token = (after as f64 - before as f64) / (to.0 - from.0) as f64;
        table.row(&[
            format!("{phase}, N = {} → {}", from.0, to.0),
            format!("{} → {}", mib(before), mib(after)),
            format!("{per_token:.2} KiB"),
            goal(&format!("≤ {KIB_PER_TOKEN} KiB"), KIB_PER_TOKEN - per_token, &format!("{:.2} KiB", (KIB_PER_TOKEN - per_token).abs())),
        ]);
    }
    Some(table)
}

/// Label selector of the Secrets the operator writes.
fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}

/// `nproc`, memory, CPU model and kernel, for the record.
fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| text.lines().find(|l| l.starts_with("MemTotal:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(|_| "unknown".into(), |k| k.trim().to_owned());
    format!("machine: {cpus} CPUs ({model}), {memory} RAM, Linux {kernel}")
}

/// A progress line on stderr (the tables go to stdout).
fn progress(message: &str) {
    eprintln!("[bench {:>8.1}s] {message}", uptime().as_secs_f64());
}

fn uptime() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}
