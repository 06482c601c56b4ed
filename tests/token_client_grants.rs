//! The token client's API-token and refresh-token grants, and the API-token details call,
//! against testkit's CSP stand-in on 127.0.0.1.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use navigator_token_operator::crd::EndpointType;
use navigator_token_operator::redact::Sensitive;
use navigator_token_operator::token::{
    API_TOKEN_AUTHORIZE_PATH, API_TOKEN_DETAILS_PATH, ApiTokenExpiry, ClientOptions, ExpirySource, Grant, RetryClass, TokenClient,
    TokenError, TokenRequest,
};
use serde_json::json;
use testkit::token_server::{Scripted, TokenServer, TokenServerConfig, csp_error};

const ORG: &str = "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4";
const API_TOKEN: &str = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9BqW2eR4tY6uI8oP0";
const SEED: &str = "seed-refresh-token-Hx7Kp2Lm9Qw4Rt6Yz8";

fn client() -> TokenClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    TokenClient::new(ClientOptions { allowed_hosts: None, request_timeout: Duration::from_secs(2), ..ClientOptions::default() }).unwrap()
}

fn request(server: &TokenServer, grant: Grant) -> TokenRequest {
    TokenRequest {
        endpoint_type: EndpointType::Csp,
        base_url: server.base_url(),
        org_id: ORG.into(),
        grant,
        scope: None,
        validity: None,
        ca_bundle: None,
    }
}

fn api_token() -> Grant {
    Grant::ApiToken(Sensitive::new(API_TOKEN))
}

fn refresh_grant(refresh_token: &str) -> Grant {
    Grant::RefreshToken {
        client_id: "testkit-client".into(),
        client_secret: Sensitive::new("testkit-secret"),
        refresh_token: Sensitive::new(refresh_token),
    }
}

#[tokio::test]
async fn an_api_token_is_sent_in_the_form_field_api_token_without_client_authentication() {
    let server = TokenServer::start(TokenServerConfig { lifetime: Duration::from_secs(1799), ..TokenServerConfig::default() }).await;
    server.add_api_token(API_TOKEN, None);
    let mut req = request(&server, api_token());
    req.validity = Some(Duration::from_secs(600));
    let token = client().issue(&req).await.unwrap();

    let sent = &server.requests()[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", API_TOKEN_AUTHORIZE_PATH));
    assert_eq!(sent.form, vec![("api_token".to_owned(), API_TOKEN.to_owned())], "the token in the body, nothing else");
    assert!(sent.query.is_empty(), "never in the query string");
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.header("accept"), Some("application/json"));
    assert_eq!(sent.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(token.access_token.expose(), server.issued()[0].access_token);
    assert_eq!(token.expiry_source, ExpirySource::ExpiresIn);
    assert_eq!(token.expires_at.duration_since(token.issued_at).as_secs(), 1799);
}

#[tokio::test]
async fn a_rejected_api_token_needs_new_credentials_and_its_echo_is_scrubbed() {
    let server = TokenServer::start(TokenServerConfig::default()).await;
    server.add_api_token(API_TOKEN, None);
    server.revoke_api_token(API_TOKEN);
    let error = client().issue(&request(&server, api_token())).await.unwrap_err();
    assert_eq!(error.reason(), "APITokenInvalid", "{error}");
    assert_eq!(error.retry_class(), RetryClass::UntilCredentialsChange);
    let text = format!("{error} {error:?}");
    assert!(text.contains("invalid_grant") && text.contains("requestId"), "{text}");
    // The stand-in quotes the token's first 10 characters, as CSP does.
    assert!(!text.contains(&API_TOKEN[..10]), "{text}");

    for status in [401, 403] {
        server.push_response(csp_error(status, "unauthorized", &format!("token {API_TOKEN} is not allowed"), "rq-1"));
        let error = client().issue(&request(&server, api_token())).await.unwrap_err();
        assert_eq!(error.reason(), "APITokenInvalid", "{status}: {error}");
        assert!(!format!("{error:?}").contains(API_TOKEN));
    }
    // Any other 400 (a malformed request) is no verdict on the token.
    server.push_response(csp_error(400, "invalid_request", "bad request", "rq-2"));
    assert_eq!(client().issue(&request(&server, api_token())).await.unwrap_err().reason(), "BadRequest");
    // Upstream trouble stays transient.
    server.push_response(csp_error(503, "unavailable", "down", "rq-3"));
    assert_eq!(client().issue(&request(&server, api_token())).await.unwrap_err().retry_class(), RetryClass::Transient);
}

#[tokio::test]
async fn api_and_refresh_tokens_are_refused_for_the_navigator_endpoint_without_a_request() {
    let server = TokenServer::start(TokenServerConfig::default()).await;
    for grant in [api_token(), refresh_grant(SEED)] {
        let mut req = request(&server, grant);
        req.endpoint_type = EndpointType::Navigator;
        let error = client().issue(&req).await.unwrap_err();
        assert!(error.to_string().contains("endpoint.type CSP"), "{error}");
        assert_eq!(error.retry_class(), RetryClass::NeedsUserAction);
    }
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn the_refresh_token_grant_uses_basic_auth_and_returns_the_rotated_refresh_token() {
    let server = TokenServer::start(TokenServerConfig::default()).await;
    server.add_refresh_token(SEED);
    let mut req = request(&server, refresh_grant(SEED));
    req.validity = Some(Duration::from_secs(900));
    req.scope = Some("openid".into());
    let token = client().issue(&req).await.unwrap();

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/csp/gateway/am/api/auth/token");
    assert_eq!(sent.form_param("grant_type"), Some("refresh_token"));
    assert_eq!(sent.form_param("refresh_token"), Some(SEED));
    assert_eq!(sent.form_param("accessTokenValiditySeconds"), Some("900"));
    assert_eq!(sent.form_param("orgId"), None, "orgId belongs to client_credentials");
    assert_eq!(sent.header("authorization"), Some(format!("Basic {}", STANDARD.encode("testkit-client:testkit-secret")).as_str()));
    let rotated = token.refresh_token.clone().expect("a rotated refresh token");
    assert_eq!(server.valid_refresh_tokens(), vec![rotated.expose().to_owned()]);
    assert!(!format!("{token:?}").contains(rotated.expose()), "Debug never shows it");

    // The seed is spent now: CSP answers 400 invalid_grant, which only a person can fix.
    let error = client().issue(&request(&server, refresh_grant(SEED))).await.unwrap_err();
    assert_eq!(error.reason(), "RefreshTokenInvalid", "{error}");
    assert_eq!(error.retry_class(), RetryClass::UntilCredentialsChange);
    assert!(!format!("{error} {error:?}").contains(&SEED[..10]), "{error}");
    // Wrong client credentials are still reported as such.
    server.set_credentials("testkit-client", "rotated");
    let error = client().issue(&request(&server, refresh_grant(rotated.expose()))).await.unwrap_err();
    assert_eq!(error.reason(), "BadRequest", "{error}");
}

#[tokio::test]
async fn the_api_tokens_own_expiry_comes_from_details_in_epoch_milliseconds() {
    let server = TokenServer::start(TokenServerConfig::default()).await;
    let expires = UNIX_EPOCH + Duration::from_millis(1_811_000_000_000);
    server.add_api_token(API_TOKEN, Some(expires));
    let details = client().api_token_details(&server.base_url(), None, &Sensitive::new(API_TOKEN)).await.unwrap();
    assert_eq!(details, ApiTokenExpiry::At(jiff::Timestamp::from_millisecond(1_811_000_000_000).unwrap()));
    let sent = &server.requests()[0];
    assert_eq!(sent.path, API_TOKEN_DETAILS_PATH);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&sent.body).unwrap(), json!({"tokenValue": API_TOKEN}));
    assert_eq!(sent.header("authorization"), None);

    server.add_api_token("never-expiring-token-0123456789", None);
    let never = client().api_token_details(&server.base_url(), None, &Sensitive::new("never-expiring-token-0123456789")).await;
    assert_eq!(never.unwrap(), ApiTokenExpiry::Never);

    // Seconds where milliseconds belong: rejected, not read as 1970.
    server.push_response(Scripted::Json(json!({"expiresAt": 1_811_000_000})));
    let error = client().api_token_details(&server.base_url(), None, &Sensitive::new(API_TOKEN)).await.unwrap_err();
    assert!(matches!(error, TokenError::MalformedResponse(_)), "{error}");
    server.revoke_api_token(API_TOKEN);
    let error = client().api_token_details(&server.base_url(), None, &Sensitive::new(API_TOKEN)).await.unwrap_err();
    assert_eq!(error.reason(), "BadRequest");
    assert!(!format!("{error:?}").contains(API_TOKEN));
}
