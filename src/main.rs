//! `navigator-token-operator`: `run` the controller, print the `crd`, issue one `token`, or
//! use the kubectl plugin's commands (`nvt`; also the whole command line when run as `kubectl-nvt`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::CustomResourceExt;
use navigator_token_operator::admin::{self, Readiness};
use navigator_token_operator::api_counter::{self, ApiCounter};
use navigator_token_operator::controller::{self, ClusterSettings, Settings};
use navigator_token_operator::crd::{CSP_DEFAULT_URL, ClusterNavigatorToken, EndpointType, NAVIGATOR_DEFAULT_URL, NavigatorToken};
use navigator_token_operator::metrics::Metrics;
use navigator_token_operator::plugin::{self, PluginArgs, PluginCli};
use navigator_token_operator::redact::Sensitive;
use navigator_token_operator::token::{ApiTokenExpiry, ClientOptions, EgressProxy, Grant, TokenClient, TokenRequest, jwt};
use navigator_token_operator::{duration, leader};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(version, about = "Keeps VMware Cloud Partner Navigator / CSP access tokens fresh in Kubernetes Secrets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the current kubeconfig context or in-cluster config.
    Run(RunArgs),
    /// Print the NavigatorToken CustomResourceDefinition as YAML.
    Crd {
        /// Print the ClusterNavigatorToken CRD instead (crds/clusternavigatortoken.yaml).
        #[arg(long)]
        cluster: bool,
    },
    /// Issue one token with the given credentials and print its expiry and non-secret claims.
    Token(TokenArgs),
    /// The kubectl plugin's commands (status, renew, inspect), as `kubectl nvt` runs them.
    Nvt(PluginArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Admin server address for /metrics, /livez and /readyz.
    #[arg(long, env = "NAVIGATOR_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Namespaces to watch (comma-separated); empty watches all namespaces.
    #[arg(long, env = "NAVIGATOR_NAMESPACES", value_delimiter = ',', default_value = "")]
    namespaces: Vec<String>,
    /// Label selector on NavigatorTokens, to shard a fleet over several operators.
    #[arg(long, env = "NAVIGATOR_SELECTOR")]
    selector: Option<String>,
    /// Reconciles running at once.
    #[arg(long, env = "NAVIGATOR_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Global cap on token requests per second (0 = unlimited).
    #[arg(long, env = "NAVIGATOR_TOKEN_RATE_LIMIT", default_value_t = 10.0)]
    token_rate_limit: f64,
    /// Hosts NavigatorTokens may send credentials to (comma-separated; loopback only when listed).
    /// The list replaces the default, it does not add to it: to add a host, list the VMware hosts
    /// too, e.g. console.navigator.vmware.com,console.cloud.vmware.com,my-proxy.example
    #[arg(
        long,
        env = "NAVIGATOR_ALLOWED_ENDPOINT_HOSTS",
        value_delimiter = ',',
        default_value = "console.navigator.vmware.com,console.cloud.vmware.com"
    )]
    allowed_endpoint_hosts: Vec<String>,
    /// Token endpoint request timeout (Go duration).
    #[arg(long, env = "NAVIGATOR_TOKEN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    token_timeout: Duration,
    /// Create or update the NavigatorToken CRD at start (needs RBAC on customresourcedefinitions).
    #[arg(long, env = "NAVIGATOR_INSTALL_CRD")]
    install_crd: bool,
    /// Run as one of several replicas; only the holder of the Lease reconciles.
    #[arg(long, env = "NAVIGATOR_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "NAVIGATOR_LEASE_NAME", default_value = "navigator-token-operator")]
    lease_name: String,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity (default: the pod name or the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Also reconcile ClusterNavigatorTokens (only when watching all namespaces; needs their CRD
    /// and RBAC on namespaces).
    #[arg(long, env = "NAVIGATOR_CLUSTER_TOKENS", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_tokens: bool,
    /// Namespaces ClusterNavigatorTokens may read credentials from (comma-separated); default the
    /// operator's own namespace (POD_NAMESPACE). Without either, every ClusterNavigatorToken is
    /// refused (reason CredentialsNamespaceNotAllowed).
    #[arg(long, env = "NAVIGATOR_CLUSTER_CREDENTIALS_NAMESPACE", value_delimiter = ',')]
    cluster_credentials_namespace: Vec<String>,
    /// Log format.
    #[arg(long, env = "NAVIGATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// The egress proxy for the token endpoints (not for the Kubernetes API server).
#[derive(Args)]
struct ProxyArgs {
    /// Proxy for the https token endpoints, e.g. http://proxy.corp:3128 (default: HTTPS_PROXY or
    /// https_proxy). Requests go through it as CONNECT tunnels: the proxy never sees credentials.
    #[arg(long)]
    proxy: Option<String>,
    /// Comma-separated hosts, domains (.corp matches subdomains), IPs and CIDRs that bypass the
    /// proxy (default: NO_PROXY or no_proxy).
    #[arg(long)]
    no_proxy: Option<String>,
}

impl ProxyArgs {
    /// The proxy from the flags or the environment; an unusable one is an error at start.
    fn egress_proxy(&self) -> anyhow::Result<Option<EgressProxy>> {
        let proxy = EgressProxy::configure(self.proxy.as_deref(), self.no_proxy.as_deref(), |name| std::env::var(name).ok())
            .map_err(|e| anyhow::anyhow!("{e} (set by --proxy or HTTPS_PROXY)"))?;
        match &proxy {
            Some(proxy) => info!(%proxy, "token endpoints are reached through an egress proxy"),
            None if ["HTTP_PROXY", "http_proxy"].iter().any(|n| std::env::var(n).is_ok_and(|v| !v.is_empty())) => {
                warn!(
                    "HTTP_PROXY is set but HTTPS_PROXY is not: as in Go and curl, HTTP_PROXY applies only to plain-http URLs, and the token endpoints are https; set HTTPS_PROXY (or --proxy) to reach them through the proxy"
                )
            }
            None => {}
        }
        Ok(proxy)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct TokenArgs {
    /// Endpoint flavour.
    #[arg(long, value_enum, default_value_t = Flavour::Navigator)]
    endpoint_type: Flavour,
    /// Base URL (default per flavour).
    #[arg(long)]
    url: Option<String>,
    /// What to check: OAuth client credentials (--client-id, NAVIGATOR_CLIENT_SECRET) or a CSP
    /// API token, read from the environment variable NAVIGATOR_API_TOKEN only (a flag's value
    /// would show in the process list and the shell history).
    #[arg(long, value_enum, default_value_t = CredentialFlavour::ClientCredentials)]
    credential: CredentialFlavour,
    /// Organization GUID (client credentials; an API token carries its own).
    #[arg(long)]
    org_id: Option<String>,
    /// OAuth client id.
    #[arg(long, env = "NAVIGATOR_CLIENT_ID")]
    client_id: Option<String>,
    /// OAuth client secret (prefer the environment variable; empty for a public client).
    #[arg(long, env = "NAVIGATOR_CLIENT_SECRET", hide_env_values = true, default_value = "")]
    client_secret: String,
    /// CSP scope.
    #[arg(long)]
    scope: Option<String>,
    /// Requested validity (Go duration).
    #[arg(long, value_parser = parse_duration)]
    validity: Option<Duration>,
    /// PEM file with extra CA certificates.
    #[arg(long)]
    ca_bundle: Option<std::path::PathBuf>,
    /// Also print the access token itself.
    #[arg(long)]
    show_token: bool,
    #[command(flatten)]
    proxy: ProxyArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum CredentialFlavour {
    ClientCredentials,
    ApiToken,
}

/// The environment variable the `token` command reads an API token from.
const API_TOKEN_VAR: &str = "NAVIGATOR_API_TOKEN";

#[derive(Clone, Copy, ValueEnum)]
enum Flavour {
    Navigator,
    Csp,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// mimalloc instead of the C library's malloc (glibc here, musl in the image): one allocator
/// measured and shipped, and a compact heap after the burst of reconciles at start
/// (bench/RESULTS.md). Built with `no_thp`: huge pages would round each touched region up to 2 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Least time between two collections of one worker thread's heap (see [`collect_freed_pages`]).
const COLLECT_INTERVAL: Duration = Duration::from_millis(10);

fn main() -> anyhow::Result<ExitCode> {
    // mimalloc gives freed pages back to the OS a second later; in the burst of reconciles after a
    // restart they pile up (~10 MiB at 10,000 tokens) before it does. Give them back at once.
    // SAFETY: sets a plain integer option; mimalloc allows this at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_park(collect_freed_pages).build()?;
    // Everything runs on the workers (whose heaps are collected when they park), not on this
    // thread, which only waits.
    let main_task = runtime.spawn(async_main());
    match runtime.block_on(main_task) {
        Ok(outcome) => outcome,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

/// Called by each worker thread as it goes idle: mimalloc keeps the pages freed by a thread in
/// that thread's heap until the thread allocates again, so a burst that ends (decoding a large
/// Secret, the reconciles after a start) would otherwise leave its pages resident for as long as
/// the thread stays idle. `mi_collect(false)` frees them (and, with a purge delay of 0, gives
/// them back to the OS); at most once per [`COLLECT_INTERVAL`] per thread, so a thread that
/// parks thousands of times a second pays for it at most a hundred times.
fn collect_freed_pages() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    LAST.with(|last| {
        if collection_due(last.get(), now) {
            last.set(Some(now));
            // SAFETY: collects the calling thread's own heap; allowed at any time.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

/// Whether a thread whose heap was last collected at `last` collects it again at `now`.
fn collection_due(last: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= COLLECT_INTERVAL)
}

async fn async_main() -> anyhow::Result<ExitCode> {
    // kube and reqwest both use rustls; ring is the one provider compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // kubectl runs plugins by file name: the same binary on PATH as `kubectl-nvt` is the plugin.
    if plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        return Ok(plugin::main(PluginCli::parse().args).await);
    }
    match Cli::parse().command {
        Command::Crd { cluster } => {
            let crd = if cluster { ClusterNavigatorToken::crd() } else { NavigatorToken::crd() };
            print!("{}", serde_norway::to_string(&crd)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(args) => issue_one(args).await.map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run(args).await,
        Command::Nvt(args) => Ok(plugin::main(args).await),
    }
}

/// Exits 0 after a signal, non-zero when leadership was lost (see `leader::Outcome`).
async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_tracing(args.log_format);
    let admin_listener = bind_admin(args.admin_addr).await?;
    let proxy = args.proxy.egress_proxy()?;
    let namespaces: Vec<Option<String>> = if args.namespaces.iter().all(|n| n.trim().is_empty()) {
        vec![None]
    } else {
        args.namespaces.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).map(|n| Some(n.to_owned())).collect()
    };
    // ClusterNavigatorTokens write into any namespace: only an operator watching all of them runs them.
    let cluster = (args.cluster_tokens && namespaces == [None]).then(|| {
        let mut allowed: Vec<String> =
            args.cluster_credentials_namespace.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        if allowed.is_empty() {
            allowed.extend(std::env::var("POD_NAMESPACE").ok().filter(|n| !n.trim().is_empty()));
        }
        ClusterSettings { credentials_namespaces: allowed }
    });
    info!(cluster_credentials_namespaces = ?cluster.as_ref().map(|c| &c.credentials_namespaces), "ClusterNavigatorTokens");
    if cluster.as_ref().is_some_and(|c| c.credentials_namespaces.is_empty()) {
        warn!(
            "ClusterNavigatorTokens are on but no namespace may hold their credentials, so every one is refused (CredentialsNamespaceNotAllowed): start with --cluster-credentials-namespace NAMESPACE (in a pod, POD_NAMESPACE is the default)"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let config = navigator_token_operator::kubeconfig::load(None).await?;
    let counter = ApiCounter::new(metrics.kube_api_requests.clone());
    let client = api_counter::client(config.clone(), counter.clone())?;
    if args.install_crd {
        navigator_token_operator::install_crd(&client).await.context("installing the CRD")?;
    }
    let tokens = TokenClient::new(ClientOptions {
        request_timeout: args.token_timeout,
        allowed_hosts: Some(args.allowed_endpoint_hosts.iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()),
        requests_per_second: Some(args.token_rate_limit).filter(|r| *r > 0.0),
        proxy,
        ..ClientOptions::default()
    })?;
    let readiness = Readiness::default();
    let shutdown = shutdown_signal();
    let identity = args.identity.clone().unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "navigator-token-operator".into()));

    let admin = tokio::spawn(admin::serve(admin_listener, admin::router(metrics.clone(), readiness.clone()), shutdown.clone().wait()));
    info!(admin = %args.admin_addr, namespaces = ?args.namespaces, "starting");

    let lease = if args.leader_elect {
        // Standbys are ready (they serve probes) but do not reconcile.
        readiness.set_ready();
        let lease = leader::Lease::new(config, counter, &args.lease_namespace, &args.lease_name, &identity)?;
        if !lease.acquire(shutdown.clone()).await {
            return Ok(ExitCode::SUCCESS);
        }
        Some(lease)
    } else {
        None
    };

    // From here on this replica reconciles (the process exits when it stops leading).
    metrics.leader.set(1);
    let synced = Arc::new(std::sync::atomic::AtomicUsize::new(namespaces.len()));
    // Shared by every controller, and flushed here when the Lease is lost (see below).
    let pending_refresh = controller::PendingRefreshTokens::new(client.clone());
    let controllers = namespaces.into_iter().map(|namespace| {
        let settings = Settings {
            namespace,
            selector: args.selector.clone(),
            concurrency: args.concurrency,
            instance: identity.clone(),
            cluster: cluster.clone(),
        };
        let (synced, readiness) = (synced.clone(), readiness.clone());
        let on_synced = move || {
            if synced.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                readiness.set_ready();
            }
        };
        let pending_refresh = pending_refresh.clone();
        controller::run(client.clone(), tokens.clone(), settings, metrics.clone(), pending_refresh, on_synced, shutdown.clone().wait())
    });
    // A signal stops the controllers gracefully; a lost Lease drops them at once (in `lead`).
    let controllers = async {
        futures::future::join_all(controllers).await;
    };
    let outcome = match &lease {
        Some(lease) => lease.lead(controllers).await,
        None => {
            controllers.await;
            leader::Outcome::Finished
        }
    };
    // A lost Lease dropped the controllers with whatever they had in flight, a rotated refresh
    // token waiting for its write included: the only copy of the newest of its chain. It is
    // written while the lease still holds (a graceful stop flushed in `controller::run`).
    if let Some(until) = lease.as_ref().and_then(leader::Lease::valid_until).filter(|_| outcome == leader::Outcome::LostLeadership)
        && !pending_refresh.is_empty()
    {
        if until > tokio::time::Instant::now() {
            pending_refresh.flush(until).await;
        } else {
            error!(unwritten = pending_refresh.len(), "the lease expired before the rotated refresh tokens could be stored");
        }
    }
    shutdown.trigger();
    admin.await??;
    if outcome == leader::Outcome::LostLeadership {
        error!("leadership lost: stopped reconciling; exiting non-zero to restart as a standby");
    } else {
        info!("stopped");
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// Binds the admin server before the cluster connection: a taken port is an error at start,
/// naming the address and the flag, not a server that silently never serves.
async fn bind_admin(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = admin::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}, given by --admin-addr (NAVIGATOR_ADMIN_ADDR), for /metrics, /livez and /readyz")
    })?;
    info!(admin = %listener.local_addr()?, "admin server listening");
    Ok(listener)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour_logs());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Colour only on a terminal (logs go to stdout): escape codes garble log files and pipes.
/// `NO_COLOR` (set and not empty) turns it off there too, as no-color.org asks.
fn colour_logs() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Fires on SIGTERM or Ctrl-C, or when triggered.
fn shutdown_signal() -> leader::Shutdown {
    let shutdown = leader::Shutdown::default();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        #[cfg(unix)]
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        trigger.trigger();
    });
    shutdown
}

async fn issue_one(args: TokenArgs) -> anyhow::Result<()> {
    let endpoint_type = match args.endpoint_type {
        Flavour::Navigator => EndpointType::Navigator,
        Flavour::Csp => EndpointType::Csp,
    };
    let default_url = match endpoint_type {
        EndpointType::Navigator => NAVIGATOR_DEFAULT_URL,
        EndpointType::Csp => CSP_DEFAULT_URL,
    };
    let ca_bundle = match &args.ca_bundle {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    // An admin checking credentials by hand names the endpoint explicitly: no allow-list.
    let client = TokenClient::new(ClientOptions { allowed_hosts: None, proxy: args.proxy.egress_proxy()?, ..ClientOptions::default() })?;
    let grant = match args.credential {
        CredentialFlavour::ClientCredentials => {
            let client_id = args.client_id.context("--client-id (or NAVIGATOR_CLIENT_ID) is required for client credentials")?;
            Grant::ClientCredentials { client_id, client_secret: Sensitive::new(args.client_secret) }
        }
        CredentialFlavour::ApiToken => {
            anyhow::ensure!(matches!(endpoint_type, EndpointType::Csp), "--credential api-token needs --endpoint-type csp");
            let api_token = std::env::var(API_TOKEN_VAR).unwrap_or_default();
            anyhow::ensure!(!api_token.trim().is_empty(), "set the API token in the environment variable {API_TOKEN_VAR}");
            Grant::ApiToken(Sensitive::new(api_token.trim()))
        }
    };
    let org_id = match (&grant, args.org_id) {
        (_, Some(org_id)) => org_id,
        (Grant::ApiToken(_), None) => String::new(),
        (_, None) => anyhow::bail!("--org-id is required for client credentials"),
    };
    let base_url = args.url.unwrap_or_else(|| default_url.to_owned());
    let request =
        TokenRequest { endpoint_type, base_url: base_url.clone(), org_id, grant, scope: args.scope, validity: args.validity, ca_bundle };
    let token = client.issue(&request).await.map_err(|e| anyhow::anyhow!(e.command_line_message()))?;
    println!("issued-at:     {}", token.issued_at);
    println!("expires-at:    {}", token.expires_at);
    println!("expiry-source: {:?}", token.expiry_source);
    if let Some(claims) = jwt::claims(token.access_token.expose()) {
        for name in jwt::DISPLAYABLE_CLAIMS {
            if let Some(value) = claims.get(*name) {
                println!("claim {name}: {value}");
            }
        }
    }
    if let Grant::ApiToken(api_token) = &request.grant {
        // The API token's own expiry: informational, so a failure is only reported.
        match client.api_token_details(&base_url, request.ca_bundle.as_deref(), api_token).await {
            Ok(ApiTokenExpiry::At(at)) => println!("api-token-expires-at: {at}"),
            Ok(ApiTokenExpiry::Never) => println!("api-token-expires-at: never"),
            Err(error) => eprintln!("could not learn the API token's own expiry: {error}"),
        }
    }
    if args.show_token {
        println!("access-token:  {}", token.access_token.expose());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{MI_OPTION_PURGE_DELAY, collect_freed_pages, collection_due};

    #[test]
    fn a_worker_collects_its_heap_at_most_once_per_10_ms() {
        let start = Instant::now();
        assert!(collection_due(None, start), "the first park collects");
        assert!(!collection_due(Some(start), start));
        assert!(!collection_due(Some(start), start + Duration::from_millis(9)));
        assert!(collection_due(Some(start), start + Duration::from_millis(10)));
        // A clock that seems to go back collects nothing (and does not panic).
        assert!(!collection_due(Some(start + Duration::from_secs(1)), start));
        // Safe to call on any thread, repeatedly.
        (0..1000).for_each(|_| collect_freed_pages());
    }

    #[test]
    fn the_purge_delay_option_number_is_mimallocs() {
        // Of mimalloc's options only the purge delay defaults to 1000 (ms): a renumbered option
        // list in a newer libmimalloc-sys fails here instead of silently tuning something else.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads a plain integer option.
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        }
    }
}
