//! The binary's one-shot commands, run as a user would.

use std::process::Command;

use testkit::token_server::{TokenServer, TokenServerConfig};

const BIN: &str = env!("CARGO_BIN_EXE_navigator-token-operator");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_prints_expiry_and_claims_but_the_token_only_on_request() {
    let server = TokenServer::start(TokenServerConfig::default()).await;
    let run = |extra: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(["token", "--endpoint-type", "csp", "--url", &server.base_url()]);
        command.args(["--org-id", "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "--client-id", "testkit-client"]);
        command.args(extra).env("NAVIGATOR_CLIENT_SECRET", "testkit-secret");
        command
    };
    let quiet = tokio::task::spawn_blocking({
        let mut c = run(&[]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(quiet.status.success(), "{}", String::from_utf8_lossy(&quiet.stderr));
    let text = String::from_utf8(quiet.stdout).unwrap();
    let issued = server.issued()[0].access_token.clone();
    assert!(text.contains("expires-at:") && text.contains("expiry-source: ExpiresIn") && text.contains("claim exp:"), "{text}");
    assert!(!text.contains(&issued), "the token is printed only with --show-token");

    let shown = tokio::task::spawn_blocking({
        let mut c = run(&["--show-token"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(shown.stdout).unwrap();
    assert!(text.contains(&server.issued()[1].access_token), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_reports_upstream_errors_without_the_secret() {
    let server = TokenServer::start(TokenServerConfig { client_secret: "other".into(), ..TokenServerConfig::default() }).await;
    let mut command = Command::new(BIN);
    command.args([
        "token",
        "--url",
        &server.base_url(),
        "--org-id",
        "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
        "--client-id",
        "testkit-client",
    ]);
    command.env("NAVIGATOR_CLIENT_SECRET", "wrong-secret-value");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(!stderr.contains("wrong-secret-value"));
    // The command has no Secret: the advice names what was given on the command line.
    assert!(!stderr.contains("Secret") && stderr.contains("--client-id") && stderr.contains("NAVIGATOR_CLIENT_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_checks_an_api_token_from_the_environment_only() {
    const API_TOKEN: &str = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9BqW2eR4tY6uI8oP0";
    let server = TokenServer::start(TokenServerConfig::default()).await;
    let expires = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_811_000_000);
    server.add_api_token(API_TOKEN, Some(expires));
    let run = |extra: &[&str], token: &str| {
        let mut command = Command::new(BIN);
        command.args(["token", "--endpoint-type", "csp", "--url", &server.base_url(), "--credential", "api-token"]);
        command.args(extra).env("NAVIGATOR_API_TOKEN", token).env_remove("NAVIGATOR_CLIENT_ID");
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let output = run(&[], API_TOKEN).await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("expiry-source: ExpiresIn") && text.contains("api-token-expires-at: 2027-05-22T"), "{text}");
    assert!(!text.contains(API_TOKEN) && !text.contains(&server.issued()[0].access_token), "{text}");
    assert_eq!(server.requests()[0].form_param("api_token"), Some(API_TOKEN));

    // There is no flag that takes the value: it would show in `ps` and the shell history.
    let output = run(&["--api-token", API_TOKEN], API_TOKEN).await.unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unexpected argument"));

    server.revoke_api_token(API_TOKEN);
    let output = run(&[], API_TOKEN).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rejected the API token") && stderr.contains("NAVIGATOR_API_TOKEN"), "{stderr}");
    assert!(!stderr.contains(&API_TOKEN[..10]), "{stderr}");
    let output = run(&[], "").await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAVIGATOR_API_TOKEN"));
}

#[test]
fn crd_command_prints_the_committed_crd() {
    let output = Command::new(BIN).arg("crd").output().unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/navigatortoken.yaml")).unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed == committed, "crds/navigatortoken.yaml is stale: run `cargo run -- crd > crds/navigatortoken.yaml`");
    let output = Command::new(BIN).args(["crd", "--cluster"]).output().unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/clusternavigatortoken.yaml")).unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("kind: ClusterNavigatorToken") && printed.contains("scope: Cluster"), "{printed}");
    assert!(
        printed == committed,
        "crds/clusternavigatortoken.yaml is stale: run `cargo run -- crd --cluster > crds/clusternavigatortoken.yaml`"
    );
}

/// Runs `run` with no cluster configuration, killed after 30 s so a hang fails instead of blocking.
fn run_without_cluster(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.arg("run").args(args);
    // Whatever the caller's environment, there is no cluster: the kubeconfig does not exist and
    // there is no in-cluster configuration either.
    command.env("KUBECONFIG", concat!(env!("CARGO_MANIFEST_DIR"), "/target/no-such-kubeconfig"));
    command.env_remove("KUBERNETES_SERVICE_HOST").env_remove("NO_COLOR").env_remove("RUST_LOG");
    command.envs(envs.iter().copied());
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_busy_admin_port_fails_at_start_naming_the_address_and_the_flag() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let output = run_without_cluster(&["--admin-addr", &addr], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("--admin-addr") && stderr.contains("in use"), "{stderr}");
}

#[test]
fn text_logs_have_no_colour_codes_when_not_on_a_terminal() {
    // Port 0: any free port. The admin listener logs once bound, then the missing cluster stops it.
    let output = run_without_cluster(&["--admin-addr", "127.0.0.1:0", "--log-format", "text"], &[]);
    let logs = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(logs.contains("INFO"), "no log line to check: {logs}");
    assert!(!logs.contains("\x1b["), "ANSI escapes in piped logs: {logs:?}");
}

#[test]
fn help_says_the_allowed_hosts_replace_the_default() {
    let output = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("replaces the default") && help.contains("console.cloud.vmware.com,my-proxy.example"), "{help}");
}

#[test]
fn an_unusable_proxy_stops_the_token_command_without_showing_its_password() {
    let output = Command::new(BIN)
        .args(["token", "--endpoint-type", "csp", "--org-id", "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "--client-id", "id"])
        .env("NAVIGATOR_CLIENT_SECRET", "s")
        .env("HTTPS_PROXY", "socks5://egress:pr0xy-pa55@proxy.corp:1080")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("socks5") && stderr.contains("HTTPS_PROXY"), "{stderr}");
    assert!(!stderr.contains("pr0xy-pa55"), "{stderr}");
}

#[test]
fn cluster_tokens_without_a_credentials_namespace_are_warned_about_at_start() {
    let output = run_without_cluster(&["--admin-addr", "127.0.0.1:0"], &[("POD_NAMESPACE", "")]);
    let logs = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("WARN") && logs.contains("--cluster-credentials-namespace NAMESPACE"), "{logs}");
    let allowed = run_without_cluster(&["--admin-addr", "127.0.0.1:0", "--cluster-credentials-namespace", "ops"], &[]);
    let logs = String::from_utf8_lossy(&allowed.stdout).into_owned() + &String::from_utf8_lossy(&allowed.stderr);
    assert!(!logs.contains("--cluster-credentials-namespace NAMESPACE"), "{logs}");
}
