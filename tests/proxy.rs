//! The token client through an egress proxy: testkit's loopback CONNECT proxy in front of the
//! token endpoint stand-in, which is addressed by a name only the proxy resolves.

use std::process::Stdio;
use std::time::Duration;

use navigator_token_operator::crd::EndpointType;
use navigator_token_operator::redact::Sensitive;
use navigator_token_operator::token::{ClientOptions, EgressProxy, Grant, TokenClient, TokenError, TokenRequest};
use serde_json::json;
use testkit::apiserver::ApiServer;
use testkit::connect_proxy::{ConnectProxy, ProxyMode};
use testkit::token_server::{PROXIED_HOST, TokenServer, TokenServerConfig};
use tokio::time::Instant;

const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn client(proxy: &str, no_proxy: &str) -> TokenClient {
    TokenClient::new(ClientOptions {
        allowed_hosts: Some(vec![PROXIED_HOST.into()]),
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        proxy: Some(EgressProxy::parse(proxy, no_proxy).unwrap()),
        ..ClientOptions::default()
    })
    .unwrap()
}

fn request(server: &TokenServer) -> TokenRequest {
    TokenRequest {
        endpoint_type: EndpointType::Csp,
        base_url: server.proxied_base_url(),
        org_id: ORG.into(),
        grant: Grant::ClientCredentials { client_id: "testkit-client".into(), client_secret: Sensitive::new("testkit-secret") },
        scope: None,
        validity: None,
        ca_bundle: server.ca_pem(),
    }
}

async fn start() -> (TokenServer, ConnectProxy) {
    (TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await, ConnectProxy::start().await)
}

async fn issue(client: &TokenClient, server: &TokenServer) -> Result<(), TokenError> {
    tokio::time::timeout(TEST_TIMEOUT, client.issue(&request(server))).await.expect("bounded").map(|_| ())
}

#[tokio::test]
async fn tokens_are_requested_through_a_connect_tunnel_that_shows_the_proxy_no_credentials() {
    let (server, proxy) = start().await;
    issue(&client(&proxy.url(), ""), &server).await.unwrap();

    // The name resolves nowhere but in the proxy: the request went through it.
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "CONNECT");
    assert_eq!(seen[0].target, format!("{PROXIED_HOST}:{}", server.local_addr().port()));
    assert_eq!(seen[0].header("authorization"), None);
    assert!(!seen[0].raw.contains("testkit-secret") && !seen[0].raw.contains("Basic"), "{}", seen[0].raw);
    // The endpoint itself got the client authentication, inside the tunnel.
    assert_eq!(server.requests()[0].basic_credentials(), Some(("testkit-client".into(), "testkit-secret".into())));
}

#[tokio::test]
async fn proxy_credentials_go_to_the_proxy_and_never_into_errors() {
    let (server, proxy) = start().await;
    proxy.require_credentials("egress", "pr0xy-pa55");
    issue(&client(&format!("http://egress:pr0xy-pa55@{}", proxy.url().trim_start_matches("http://")), ""), &server).await.unwrap();
    assert_eq!(proxy.requests()[0].header("proxy-authorization"), Some("Basic ZWdyZXNzOnByMHh5LXBhNTU="));

    let wrong = client(&format!("http://egress:wr0ng-pa55@{}", proxy.url().trim_start_matches("http://")), "");
    let error = issue(&wrong, &server).await.unwrap_err();
    assert_eq!(error.reason(), "ProxyError", "{error}");
    let text = format!("{error} {error:?}");
    assert!(text.contains("proxy authorization required"), "{text}");
    assert!(text.contains(&proxy.url()) && !text.contains("wr0ng-pa55") && !text.contains("egress:"), "{text}");
    assert_eq!(server.request_count(), 1, "the refused attempt never reached the endpoint");
}

#[tokio::test]
async fn a_refusing_failing_or_silent_proxy_is_a_proxy_error_that_is_retried() {
    let (server, proxy) = start().await;
    let client = client(&proxy.url(), "");
    for (mode, cause) in [
        (ProxyMode::Refuse(403), "unsuccessful"),
        (ProxyMode::Refuse(502), "unsuccessful"),
        (ProxyMode::Drop, ""),
        (ProxyMode::Hang, "no answer within 1s"),
    ] {
        proxy.set_mode(mode.clone());
        let error = issue(&client, &server).await.unwrap_err();
        assert_eq!(error.reason(), "ProxyError", "{mode:?}: {error}");
        assert!(error.to_string().contains(cause), "{mode:?}: {error}");
        assert!(error.to_string().contains("HTTPS_PROXY"), "the message says where the proxy is set: {error}");
        assert_eq!(error.retry_class(), navigator_token_operator::token::RetryClass::Transient);
    }
    assert_eq!(server.request_count(), 0);

    // A proxy that is not listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error = issue(&self::client(&format!("http://{closed}"), ""), &server).await.unwrap_err();
    assert_eq!(error.reason(), "ProxyError", "{error}");

    proxy.set_mode(ProxyMode::Tunnel);
    issue(&client, &server).await.unwrap();
}

#[tokio::test]
async fn hosts_in_no_proxy_are_reached_directly() {
    let (server, proxy) = start().await;
    // Directly, the .test name does not resolve: a connection error, not a proxy error.
    let error = issue(&client(&proxy.url(), ".test"), &server).await.unwrap_err();
    assert_eq!(error.reason(), "ConnectionFailed", "{error}");
    assert!(error.to_string().contains("(direct: NO_PROXY or a loopback host exempts it from the proxy)"), "{error}");
    assert!(proxy.requests().is_empty());
}

#[tokio::test]
async fn the_endpoint_allow_list_applies_whatever_the_proxy() {
    let (server, proxy) = start().await;
    let restricted = TokenClient::new(ClientOptions {
        allowed_hosts: Some(vec!["console.cloud.vmware.com".into()]),
        proxy: Some(EgressProxy::parse(&proxy.url(), "").unwrap()),
        ..ClientOptions::default()
    })
    .unwrap();
    let error = issue(&restricted, &server).await.unwrap_err();
    assert_eq!(error.reason(), "EndpointNotAllowed", "{error}");
    assert!(proxy.requests().is_empty(), "not even a CONNECT for a host outside the allow-list");
}

/// The operator binary, configured the way a Deployment is: HTTPS_PROXY and NO_PROXY in its
/// environment, a kubeconfig for the API server (which NO_PROXY exempts, as kubectl would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_honours_https_proxy_and_no_proxy_from_its_environment() {
    let api = ApiServer::start().await;
    let (server, proxy) = start().await;
    api.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    api.insert(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "team-a", "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"client_id": "testkit-client", "client_secret": "testkit-secret"},
    }));
    api.insert(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
        "metadata": {"name": "egress", "namespace": "team-a"},
        "spec": {"orgId": ORG, "credentialsSecretRef": {"name": "creds"},
                 "endpoint": {"type": "CSP", "url": server.proxied_base_url(), "caBundle": server.ca_pem().unwrap()}},
    }));
    let kubeconfig = std::env::temp_dir().join(format!("nvt-proxy-test-{}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_navigator-token-operator"))
        .args(["run", "--admin-addr", "127.0.0.1:0", "--namespaces", "team-a", "--allowed-endpoint-hosts", PROXIED_HOST])
        .env("KUBECONFIG", &kubeconfig)
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api
        .get("navigator.dev/v1alpha1", "navigatortokens", Some("team-a"), "egress")
        .is_none_or(|t| !t["status"]["expiresAt"].is_string())
    {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            child.start_kill().unwrap();
            let output = child.wait_with_output().await.unwrap();
            panic!("no token through the proxy: {}", String::from_utf8_lossy(&output.stderr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let _ = std::fs::remove_file(&kubeconfig);
    let targets: Vec<String> = proxy.requests().into_iter().map(|r| format!("{} {}", r.method, r.target)).collect();
    assert_eq!(
        targets,
        [format!("CONNECT {PROXIED_HOST}:{}", server.local_addr().port())],
        "only the token endpoint went through the proxy"
    );
}
