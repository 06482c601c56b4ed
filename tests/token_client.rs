//! The token client against a real HTTP(S) server on 127.0.0.1 (testkit's token endpoint stand-in).

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use navigator_token_operator::crd::EndpointType;
use navigator_token_operator::redact::Sensitive;
use navigator_token_operator::token::{ClientOptions, ExpirySource, Grant, RetryClass, TokenClient, TokenError, TokenRequest};
use serde_json::json;
use testkit::token_server::{Scripted, TokenServer, TokenServerConfig, csp_error, jwt};

const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> TokenClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TokenClient::new(ClientOptions {
        allowed_hosts: None,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    })
    .unwrap()
}

fn request(server: &TokenServer, endpoint_type: EndpointType) -> TokenRequest {
    TokenRequest {
        endpoint_type,
        base_url: server.base_url(),
        org_id: ORG.into(),
        grant: Grant::ClientCredentials { client_id: "testkit-client".into(), client_secret: Sensitive::new("testkit-secret") },
        scope: None,
        validity: None,
        ca_bundle: server.ca_pem(),
    }
}

async fn start() -> TokenServer {
    TokenServer::start(TokenServerConfig::default()).await
}

/// Runs one scripted answer through the client and returns the error it produced.
async fn error_for(endpoint_type: EndpointType, scripted: Scripted) -> TokenError {
    let server = start().await;
    server.push_response(scripted);
    let result = tokio::time::timeout(TEST_TIMEOUT, client().issue(&request(&server, endpoint_type))).await.expect("bounded");
    assert_eq!(server.request_count(), 1, "exactly one request per attempt");
    result.expect_err("scripted failure")
}

#[tokio::test]
async fn navigator_request_has_the_documented_shape_and_expiry_comes_from_the_jwt() {
    let server = start().await;
    let mut req = request(&server, EndpointType::Navigator);
    req.validity = Some(Duration::from_secs(1800));
    let token = client().issue(&req).await.unwrap();

    let sent = &server.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/cphub/api/auth/v2/authn/authorize");
    assert_eq!(sent.query_param("orgId"), Some(ORG));
    assert_eq!(sent.query_param("accessTokenValiditySeconds"), Some("1800"));
    assert_eq!(sent.header("authorization"), Some(format!("Basic {}", STANDARD.encode("testkit-client:testkit-secret")).as_str()));
    assert_eq!(sent.header("content-type"), Some("application/x-www-form-urlencoded"));

    let issued = &server.issued()[0];
    assert_eq!(token.access_token.expose(), issued.access_token);
    assert_eq!(token.id_token.as_ref().map(|t| t.expose().to_owned()), Some(issued.id_token.clone()));
    assert_eq!(token.expiry_source, ExpirySource::JwtExp);
    assert_eq!(token.expires_at.as_second(), issued.exp as i64);
    let lifetime = token.expires_at.duration_since(token.issued_at).as_secs();
    assert!((1795..=1801).contains(&lifetime), "lifetime {lifetime}");
}

#[tokio::test]
async fn csp_request_sends_the_form_and_expiry_comes_from_expires_in() {
    let server = start().await;
    let mut req = request(&server, EndpointType::Csp);
    req.scope = Some("openid ALL_PERMISSIONS".into());
    req.validity = Some(Duration::from_secs(600));
    let token = client().issue(&req).await.unwrap();

    let sent = &server.requests()[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", "/csp/gateway/am/api/auth/token"));
    assert_eq!(sent.form_param("grant_type"), Some("client_credentials"));
    assert_eq!(sent.form_param("orgId"), Some(ORG));
    assert_eq!(sent.form_param("scope"), Some("openid ALL_PERMISSIONS"));
    assert_eq!(sent.form_param("accessTokenValiditySeconds"), Some("600"));
    assert_eq!(sent.basic_credentials(), Some(("testkit-client".into(), "testkit-secret".into())));
    assert_eq!(token.expiry_source, ExpirySource::ExpiresIn);
    let lifetime = token.expires_at.duration_since(token.issued_at).as_secs();
    assert!((599..=600).contains(&lifetime), "lifetime {lifetime}");
    assert_eq!(token.access_token.expose(), server.issued()[0].access_token);
}

#[tokio::test]
async fn public_client_sends_an_empty_secret() {
    let server = TokenServer::start(TokenServerConfig { client_secret: String::new(), ..TokenServerConfig::default() }).await;
    let mut req = request(&server, EndpointType::Csp);
    req.grant = Grant::ClientCredentials { client_id: "testkit-client".into(), client_secret: Sensitive::new("") };
    client().issue(&req).await.unwrap();
    assert_eq!(server.requests()[0].header("authorization"), Some(format!("Basic {}", STANDARD.encode("testkit-client:")).as_str()));
}

#[tokio::test]
async fn opaque_token_expiry_falls_back_to_the_requested_validity_or_fails() {
    let server = start().await;
    server.push_response(Scripted::Json(json!({"accessToken": "opaque-token"})));
    server.push_response(Scripted::Json(json!({"accessToken": "opaque-token"})));
    let mut req = request(&server, EndpointType::Navigator);
    req.validity = Some(Duration::from_secs(900));
    let token = client().issue(&req).await.unwrap();
    assert_eq!(token.expiry_source, ExpirySource::RequestedValidity);
    assert_eq!(token.expires_at.duration_since(token.issued_at).as_secs(), 900);
    req.validity = None;
    assert_eq!(client().issue(&req).await.unwrap_err(), TokenError::UnknownExpiry);
}

#[tokio::test]
async fn every_documented_error_status_maps_to_a_distinct_readable_error() {
    let cases: Vec<(Scripted, &str, RetryClass)> = vec![
        (csp_error(400, "invalid_request", "orgId is malformed", "req-400"), "BadRequest", RetryClass::NeedsUserAction),
        (Scripted::status(401, "application/json", r#"{"message":"bad client"}"#), "Unauthorized", RetryClass::NeedsUserAction),
        (csp_error(403, "forbidden", "Client is forbidden", "req-403"), "Forbidden", RetryClass::NeedsUserAction),
        (
            csp_error(404, "org_not_found", "Organization with this identifier is not found", "req-404"),
            "NotFound",
            RetryClass::NeedsUserAction,
        ),
        (csp_error(409, "conflict", "conflict", "req-409"), "UnexpectedStatus", RetryClass::Transient),
        (csp_error(500, "internal", "unexpected", "req-500"), "UpstreamUnavailable", RetryClass::Transient),
        (Scripted::status(502, "text/html", "<html><body>Bad Gateway</body></html>"), "UpstreamUnavailable", RetryClass::Transient),
        (Scripted::status(503, "text/plain", "down"), "UpstreamUnavailable", RetryClass::Transient),
        (Scripted::status(504, "", ""), "UpstreamUnavailable", RetryClass::Transient),
        (Scripted::status(429, "application/json", "{}"), "RateLimited", RetryClass::RateLimited(None)),
    ];
    let mut messages = Vec::new();
    for (scripted, reason, class) in cases {
        let error = error_for(EndpointType::Csp, scripted).await;
        assert_eq!((error.reason(), error.retry_class()), (reason, class), "{error}");
        messages.push(error.to_string());
    }
    assert!(
        messages[2].contains("Client is forbidden")
            && messages[2].contains("cspErrorCode forbidden")
            && messages[2].contains("requestId req-403"),
        "{}",
        messages[2]
    );
    assert!(messages[3].contains("HTTP 404"), "{}", messages[3]);
    assert!(!messages[6].contains("<html"), "an HTML page is not quoted: {}", messages[6]);
    let unique: std::collections::HashSet<&String> = messages.iter().collect();
    assert_eq!(unique.len(), messages.len(), "messages must differ: {messages:#?}");
}

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_http_date_form() {
    let seconds = Scripted::Status {
        code: 429,
        body: "{}".into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), "17".into())],
    };
    assert_eq!(error_for(EndpointType::Csp, seconds).await.retry_class(), RetryClass::RateLimited(Some(Duration::from_secs(17))));
    let date =
        jiff::fmt::rfc2822::to_string(&(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(40)).to_zoned(jiff::tz::TimeZone::UTC))
            .unwrap();
    let dated = Scripted::Status {
        code: 429,
        body: "{}".into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), date)],
    };
    match error_for(EndpointType::Csp, dated).await.retry_class() {
        RetryClass::RateLimited(Some(d)) => assert!(d > Duration::from_secs(30) && d <= Duration::from_secs(40), "{d:?}"),
        other => panic!("{other:?}"),
    }
    let huge = Scripted::Status {
        code: 429,
        body: "{}".into(),
        content_type: "application/json".into(),
        headers: vec![("retry-after".into(), "86400".into())],
    };
    assert_eq!(error_for(EndpointType::Csp, huge).await.retry_class(), RetryClass::RateLimited(Some(Duration::from_secs(600))));
}

#[tokio::test]
async fn broken_connections_are_bounded_and_classified() {
    assert_eq!(error_for(EndpointType::Navigator, Scripted::Hang).await.reason(), "Timeout");
    assert_eq!(error_for(EndpointType::Navigator, Scripted::Trickle { interval: Duration::from_millis(100) }).await.reason(), "Timeout");
    let reset = error_for(EndpointType::Navigator, Scripted::Reset).await;
    assert!(matches!(reset.reason(), "TransportError" | "ConnectionFailed"), "{reset}");

    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut req = request(&start().await, EndpointType::Navigator);
    req.base_url = format!("http://127.0.0.1:{port}");
    let refused = client().issue(&req).await.unwrap_err();
    assert_eq!(refused.reason(), "ConnectionFailed", "{refused}");
    assert_eq!(refused.retry_class(), RetryClass::Transient);
    // Where it tried to connect, whether through a proxy, and what to check.
    let message = refused.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port} (direct, no proxy set)")), "{message}");
    assert!(message.contains("DNS") && message.contains("HTTPS_PROXY"), "{message}");
}

#[tokio::test]
async fn bad_bodies_are_rejected() {
    let past =
        jwt(&json!({"exp": (SystemTime::now() - Duration::from_secs(60)).duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()}));
    let far = jwt(&json!({"exp": 4_102_444_800u64 * 10}));
    let cases = [
        (Scripted::RawBody("{not json".into()), "MalformedResponse"),
        (Scripted::RawBody("".into()), "MalformedResponse"),
        (Scripted::Json(json!({"idToken": "x"})), "MissingToken"),
        (Scripted::Json(json!({"accessToken": ""})), "MissingToken"),
        (Scripted::Json(json!({"accessToken": 42})), "MalformedResponse"),
        (Scripted::Json(json!({"accessToken": past})), "TokenAlreadyExpired"),
        (Scripted::Json(json!({"accessToken": far})), "ImplausibleExpiry"),
        (Scripted::Huge { bytes: 8 * 1024 * 1024 }, "ResponseTooLarge"),
    ];
    for (scripted, reason) in cases {
        let error = error_for(EndpointType::Navigator, scripted.clone()).await;
        assert_eq!(error.reason(), reason, "{scripted:?}: {error}");
        assert_eq!(error.retry_class(), RetryClass::Transient);
    }
}

#[tokio::test]
async fn malformed_json_errors_never_quote_the_body() {
    let error = error_for(EndpointType::Csp, Scripted::RawBody(r#"{"access_token": "leaky-token-value", "expires_in": [1"#.into())).await;
    assert!(!error.to_string().contains("leaky-token-value"), "{error}");
    let error = error_for(EndpointType::Csp, Scripted::Json(json!({"access_token": {"nested": "leaky-token-value"}}))).await;
    assert!(!error.to_string().contains("leaky-token-value"), "{error}");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let elsewhere = start().await;
    let error =
        error_for(EndpointType::Csp, Scripted::Redirect { location: elsewhere.url(testkit::token_server::Endpoint::Csp), code: 307 }).await;
    assert_eq!(error.reason(), "Redirected");
    assert_eq!(elsewhere.request_count(), 0, "credentials must not follow the redirect");
}

#[tokio::test]
async fn echoed_credentials_are_scrubbed_from_error_messages() {
    let body =
        json!({"message": "bad secret testkit-secret in Basic dGVzdGtpdC1jbGllbnQ6dGVzdGtpdC1zZWNyZXQ=", "requestId": "r1"}).to_string();
    let error = error_for(EndpointType::Csp, Scripted::status(400, "application/json", &body)).await;
    let text = format!("{error} {error:?}");
    assert!(!text.contains("testkit-secret") && !text.contains("dGVzdGtpdC1jbGllbnQ6dGVzdGtpdC1zZWNyZXQ="), "{text}");
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_bundle() {
    let server = TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await;
    let trusted = request(&server, EndpointType::Csp);
    assert!(trusted.base_url.starts_with("https://"));
    client().issue(&trusted).await.unwrap();

    let mut untrusted = trusted.clone();
    untrusted.ca_bundle = None;
    let error = client().issue(&untrusted).await.unwrap_err();
    assert_eq!(error.reason(), "TLSError", "{error}");
    assert!(error.to_string().contains("caBundle"), "{error}");

    let mut not_pem = trusted.clone();
    not_pem.ca_bundle = Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".into());
    assert_eq!(client().issue(&not_pem).await.unwrap_err().reason(), "InvalidEndpoint");

    let mut plain_with_bundle = trusted.clone();
    plain_with_bundle.base_url = plain_with_bundle.base_url.replace("https://", "http://");
    assert_eq!(client().issue(&plain_with_bundle).await.unwrap_err().reason(), "InvalidEndpoint");
    assert_eq!(server.request_count(), 1, "only the trusted request reached the server");
}

#[tokio::test]
async fn endpoint_hosts_outside_the_allow_list_get_no_request() {
    let server = start().await;
    let restricted =
        TokenClient::new(ClientOptions { allowed_hosts: Some(vec!["console.cloud.vmware.com".into()]), ..ClientOptions::default() })
            .unwrap();
    let error = restricted.issue(&request(&server, EndpointType::Csp)).await.unwrap_err();
    assert_eq!(error.reason(), "EndpointNotAllowed", "{error}");
    assert_eq!(server.request_count(), 0);
    let loopback_listed =
        TokenClient::new(ClientOptions { allowed_hosts: Some(vec!["127.0.0.1".into()]), ..ClientOptions::default() }).unwrap();
    loopback_listed.issue(&request(&server, EndpointType::Csp)).await.unwrap();
    assert_eq!(server.request_count(), 1);

    let mut remote_http = request(&server, EndpointType::Csp);
    remote_http.base_url = "http://console.cloud.vmware.com".into();
    assert_eq!(restricted.issue(&remote_http).await.unwrap_err().reason(), "InvalidEndpoint", "plain http only to loopback");
}

#[tokio::test]
async fn tokens_and_secrets_never_show_in_debug_or_display() {
    let server = start().await;
    let req = request(&server, EndpointType::Csp);
    let token = client().issue(&req).await.unwrap();
    let issued = &server.issued()[0];
    let shown = format!("{token:?} {req:?} {:?} {:?}", token.access_token, token.id_token);
    for secret in [issued.access_token.as_str(), issued.id_token.as_str(), "testkit-secret"] {
        assert!(!shown.contains(secret), "leaked in {shown}");
    }
}

#[tokio::test]
async fn the_rate_limit_spaces_requests() {
    let server = start().await;
    let limited =
        TokenClient::new(ClientOptions { allowed_hosts: None, requests_per_second: Some(20.0), ..ClientOptions::default() }).unwrap();
    let req = request(&server, EndpointType::Csp);
    futures::future::join_all((0..5).map(|_| limited.issue(&req))).await.into_iter().for_each(|r| assert!(r.is_ok()));
    let mut times: Vec<SystemTime> = server.requests().iter().map(|r| r.at).collect();
    times.sort();
    let span = times[4].duration_since(times[0]).unwrap();
    assert!(span >= Duration::from_millis(180), "5 requests at 20/s must span >= 200ms, spanned {span:?}");
}
