//! A hostile or broken token endpoint and bad input, with the real controller loop: each fault
//! gets a clear status reason, a Warning event, a bounded retry pattern, and loses no valid token.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use navigator_token_operator::token::{ClientOptions, EgressProxy};
use serde_json::json;
use support::Harness;
use testkit::connect_proxy::{ConnectProxy, ProxyMode};
use testkit::token_server::{PROXIED_HOST, Scripted, TokenServer, TokenServerConfig};

const LONG: Duration = Duration::from_secs(600);
const WAIT: Duration = Duration::from_secs(20);

async fn force_refresh(h: &Harness, name: &str, stamp: &str) {
    h.patch_token(name, json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": stamp}}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_valid_token_backs_off_and_recovers() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("outage", json!({})).await;
    h.wait_for_token_in_secret("outage", 1).await;
    let good = h.secret_token("outage", "token").await.unwrap();

    h.tokens.set_default(Some(Scripted::status(503, "text/html", "<html>maintenance</html>")));
    let before = h.tokens.request_count();
    force_refresh(&h, "outage", "1").await;
    h.wait_for_ready("outage", "True", "RefreshFailing").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Exponential backoff from 2s (±20%): attempts near 0s, 2s and 6s in 7s, never a storm.
    let attempts = h.tokens.request_count() - before;
    assert!((2..=4).contains(&attempts), "{attempts} attempts in 7s");
    assert_eq!(h.secret_token("outage", "token").await.unwrap(), good, "the valid token stays");
    let status = h.token("outage").await.status.unwrap();
    assert!(status.consecutive_failures >= 2);
    let failing = h.series("navigator_token_consecutive_failures", "outage").expect("a failure series while failing");
    let count: u32 = failing.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a count");
    assert!(count >= 1, "{failing}");
    let failure = status.last_failure.unwrap();
    assert_eq!(failure.reason, "UpstreamUnavailable");
    assert!(failure.message.contains("HTTP 503"), "{}", failure.message);
    assert!(h.has_event("outage", "Warning", "UpstreamUnavailable").await);
    let warnings = h.events("outage").await.into_iter().filter(|(kind, _)| kind == "Warning").count();
    assert_eq!(warnings, 1, "one Warning per failure episode, not one per attempt");

    h.tokens.set_default(None);
    force_refresh(&h, "outage", "2").await; // a change retries at once, whatever the backoff
    h.wait_until("recovered", WAIT, || async { h.secret_token("outage", "token").await.unwrap() != good }).await;
    h.wait_for_ready("outage", "True", "TokenValid").await;
    assert!(h.has_event("outage", "Normal", "Recovered").await);
    assert_eq!(h.token("outage").await.status.unwrap().consecutive_failures, 0);
    assert_eq!(h.series("navigator_token_consecutive_failures", "outage"), None, "no failure series once healthy");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_retry_slowly_and_at_once_when_fixed() {
    let mut h = Harness::new(LONG).await;
    h.tokens.set_credentials("testkit-client", "the-real-secret");
    h.start_operator();
    h.create_token("creds", json!({"endpoint": {"type": "Navigator"}})).await;
    h.wait_for_ready("creds", "False", "Unauthorized").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.tokens.request_count(), 1, "credential errors wait for a change");
    let message = h.token("creds").await.status.unwrap().last_failure.unwrap().message;
    assert!(message.contains("HTTP 401") && message.contains("credentials Secret"), "{message}");
    assert!(h.has_event("creds", "Warning", "Unauthorized").await);

    h.put_credentials("testkit-client", "the-real-secret").await;
    h.wait_for_ready("creds", "True", "TokenValid").await;
    assert_eq!(h.tokens.request_count(), 2);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_honour_retry_after() {
    let mut h = Harness::new(LONG).await;
    h.tokens.push_response(Scripted::Status {
        code: 429,
        body: r#"{"cspErrorCode":"rate_limited","message":"slow down","requestId":"rq-429"}"#.into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), "2".into())],
    });
    h.start_operator();
    h.create_token("limited", json!({})).await;
    h.wait_for_ready("limited", "False", "RateLimited").await;
    let message = h.token("limited").await.status.unwrap().last_failure.unwrap().message;
    assert!(message.contains("requestId rq-429") && message.contains("retry after 2s"), "{message}");
    h.wait_for_token_in_secret("limited", 1).await;
    let requests = h.tokens.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at).unwrap();
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}, before Retry-After");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_responses_are_reported_with_their_reason() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    let cases = [
        ("huge", Scripted::Huge { bytes: 4 * 1024 * 1024 }, "ResponseTooLarge"),
        ("hang", Scripted::Hang, "Timeout"),
        ("garbage", Scripted::RawBody("{\"access_token\": ".into()), "MalformedResponse"),
        ("empty", Scripted::Json(json!({"access_token": "", "expires_in": 60})), "MissingToken"),
        ("moved", Scripted::Redirect { location: "https://example.invalid/steal".into(), code: 302 }, "Redirected"),
    ];
    for (name, scripted, reason) in &cases {
        // Persistent, so that earlier tokens' retries cannot take a one-off answer meant for this one.
        h.tokens.set_default(Some(scripted.clone()));
        h.create_token(name, json!({})).await;
        h.wait_for_ready(name, "False", reason).await;
        assert!(h.has_event(name, "Warning", reason).await, "{name}: no Warning event");
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_secrets_block_without_a_request() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    let secret = |name: &str, labelled: bool, data: serde_json::Value| -> Secret {
        let labels = if labelled { json!({"navigator.dev/credentials": "true"}) } else { json!({}) };
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels}, "data": data}))
            .unwrap()
    };
    let b64 = |s: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let secrets = h.secrets();
    for s in [
        secret("unlabelled", false, json!({"client_id": b64(b"testkit-client"), "client_secret": b64(b"testkit-secret")})),
        secret("no-key", true, json!({"client_id": b64(b"id")})),
        secret("empty", true, json!({"client_id": b64(b"id"), "client_secret": ""})),
        secret("binary", true, json!({"client_id": b64(&[0xff, 0xfe, 0x00]), "client_secret": b64(b"x")})),
        // The cache keeps 8 KiB of a credentials Secret: a larger key is named, never sent.
        secret("huge", true, json!({"client_id": b64(b"testkit-client"), "client_secret": b64(&[b's'; 64 * 1024])})),
    ] {
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let cases = [
        ("missing", "does-not-exist", "CredentialsNotFound", "not found"),
        ("unlabelled", "unlabelled", "CredentialsNotLabelled", "kubectl label secret"),
        ("no-key", "no-key", "CredentialsInvalid", "key client_secret is missing"),
        ("empty", "empty", "CredentialsInvalid", "key client_secret is empty"),
        ("binary", "binary", "CredentialsInvalid", "key client_id is not UTF-8"),
        ("huge", "huge", "CredentialsInvalid", "key client_secret is larger than the 8 KiB the operator keeps per credentials Secret"),
    ];
    for (name, secret_name, reason, text) in cases {
        let spec = json!({"credentialsSecretRef": {"name": secret_name}, "target": {"secretName": format!("{name}-token")}});
        h.create_token(name, spec).await;
        h.wait_for_ready(name, "False", reason).await;
        let message = h.token(name).await.status.unwrap().last_failure.unwrap().message;
        assert!(message.contains(text), "{name}: {message}");
        assert!(h.has_event(name, "Warning", reason).await, "{name}: no Warning event");
    }
    // Blocked NavigatorTokens sit still: no status rewrites, no hot loop.
    let quiet = h.api_counts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.api_counts().since(&quiet).total(), 0, "blocked tokens must not loop");

    // One good NavigatorToken beside the bad ones is served as usual.
    h.create_token("good", json!({})).await;
    h.wait_for_token_in_secret("good", 1).await;
    assert_eq!(h.tokens.request_count(), 1, "bad credentials never reach the endpoint");

    // Fixing a Secret (adding the label) retries at once.
    let label = json!({"metadata": {"labels": {"navigator.dev/credentials": "true"}}});
    secrets.patch("unlabelled", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    h.wait_for_ready("unlabelled", "True", "TokenValid").await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_the_operator_did_not_create_is_never_overwritten() {
    let mut h = Harness::new(LONG).await;
    let theirs: Secret = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken"}, "stringData": {"token": "theirs"}}),
    )
    .unwrap();
    h.secrets().create(&PostParams::default(), &theirs).await.unwrap();
    h.start_operator();
    h.create_token("conflict", json!({"target": {"secretName": "taken"}})).await;
    h.wait_for_ready("conflict", "False", "SecretConflict").await;
    assert_eq!(h.secret_token("taken", "token").await.as_deref(), Some("theirs"));
    assert_eq!(h.tokens.request_count(), 0, "no token is requested for a Secret it cannot write");
    assert!(h.has_event("conflict", "Warning", "SecretConflict").await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_outside_the_allow_list_get_no_request() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    let port = h.tokens.base_url().rsplit(':').next().unwrap().to_owned();
    h.create_token("elsewhere", json!({"endpoint": {"url": format!("http://localhost:{port}")}})).await;
    h.wait_for_ready("elsewhere", "False", "EndpointNotAllowed").await;
    assert_eq!(h.tokens.request_count(), 0);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoints_need_a_trusted_ca_bundle() {
    let mut h = Harness::new(LONG).await;
    let tls = TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await;
    h.start_operator();
    h.create_token("trusted", json!({"endpoint": {"url": tls.base_url(), "caBundle": tls.ca_pem().unwrap()}})).await;
    h.create_token("untrusted", json!({"endpoint": {"url": tls.base_url()}})).await;
    h.wait_until("trusted issued", WAIT, || async { h.ready("trusted").await.is_some_and(|(s, _)| s == "True") }).await;
    h.wait_for_ready("untrusted", "False", "TLSError").await;
    assert_eq!(tls.request_count(), 1, "the untrusted handshake never carried a request");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_outage_is_reported_as_such_and_keeps_the_valid_token() {
    let mut h = Harness::new(LONG).await;
    let tls = TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await;
    let proxy = ConnectProxy::start().await;
    h.start_operator_with(ClientOptions {
        allowed_hosts: Some(vec![PROXIED_HOST.into()]),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        proxy: Some(EgressProxy::parse(&proxy.url(), "").unwrap()),
        ..ClientOptions::default()
    });
    h.create_token("egress", json!({"endpoint": {"url": tls.proxied_base_url(), "caBundle": tls.ca_pem().unwrap()}})).await;
    h.wait_for_ready("egress", "True", "TokenValid").await;
    let good = h.secret_token("egress", "token").await.unwrap();
    assert!(proxy.requests().iter().all(|r| r.method == "CONNECT"), "only tunnels: {:?}", proxy.requests());

    proxy.set_mode(ProxyMode::Refuse(502));
    force_refresh(&h, "egress", "1").await;
    h.wait_for_ready("egress", "True", "RefreshFailing").await;
    // The first attempt may still go out on the pooled tunnel the proxy is cutting (a transport
    // error); the retry asks the proxy, which refuses.
    h.wait_until("the failure names the proxy", WAIT, || async {
        h.token("egress").await.status.and_then(|s| s.last_failure).is_some_and(|f| f.reason == "ProxyError")
    })
    .await;
    let failure = h.token("egress").await.status.unwrap().last_failure.unwrap();
    assert_eq!(failure.reason, "ProxyError");
    assert!(failure.message.contains(&proxy.url()), "{}", failure.message);
    assert!(h.has_event("egress", "Warning", "ProxyError").await);
    assert_eq!(h.secret_token("egress", "token").await.unwrap(), good, "the valid token stays");
    assert_eq!(tls.request_count(), 1, "no request got past the proxy");

    proxy.set_mode(ProxyMode::Tunnel);
    force_refresh(&h, "egress", "2").await;
    h.wait_until("recovered", WAIT, || async { h.secret_token("egress", "token").await.unwrap() != good }).await;
    h.wait_for_ready("egress", "True", "TokenValid").await;
    h.finish().await;
}
