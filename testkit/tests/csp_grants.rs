//! The stand-in's CSP API-token exchange, API-token details and rotating refresh-token grant,
//! through a real HTTP client on 127.0.0.1, each test under a time bound.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use testkit::token_server::{API_TOKEN_AUTHORIZE_PATH, API_TOKEN_DETAILS_PATH, CSP_PATH, TokenServer, TokenServerConfig};

const FORM: &str = "application/x-www-form-urlencoded";
const API_TOKEN: &str = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9BqW2eR4tY6uI8oP0";

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("test exceeded its time bound")
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(server: &TokenServer, path_and_query: &str, content_type: &str, body: String, auth: Option<String>) -> (u16, Value) {
    let mut request = client().post(format!("{}{path_and_query}", server.base_url())).header("content-type", content_type).body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null))
}

async fn authorize(server: &TokenServer, form: String) -> (u16, Value) {
    post(server, API_TOKEN_AUTHORIZE_PATH, FORM, form, None).await
}

fn basic() -> String {
    let config = TokenServerConfig::default();
    format!("Basic {}", STANDARD.encode(format!("{}:{}", config.client_id, config.client_secret)))
}

async fn refresh(server: &TokenServer, refresh_token: &str) -> (u16, Value) {
    post(server, CSP_PATH, FORM, format!("grant_type=refresh_token&refresh_token={refresh_token}"), Some(basic())).await
}

#[tokio::test]
async fn api_tokens_are_exchanged_from_the_form_body_only() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig { lifetime: Duration::from_secs(1799), ..TokenServerConfig::default() }).await;
        server.add_api_token(API_TOKEN, None);

        let (status, body) = authorize(&server, format!("api_token={API_TOKEN}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 1799);
        assert_eq!(body["token_type"], "bearer");
        assert!(body["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
        assert!(body["id_token"].is_string() && body["scope"].is_string());
        assert_eq!(server.issued().len(), 1);

        // The deprecated field name still works.
        assert_eq!(authorize(&server, format!("refresh_token={API_TOKEN}")).await.0, 200);
        // A query parameter has been rejected for years.
        let (status, body) = post(&server, &format!("{API_TOKEN_AUTHORIZE_PATH}?api_token={API_TOKEN}"), FORM, String::new(), None).await;
        assert_eq!((status, body["cspErrorCode"].as_str()), (400, Some("invalid_request")), "{body}");
        assert_eq!(authorize(&server, String::new()).await.0, 400);
        assert_eq!(server.issued().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn unknown_revoked_and_expired_api_tokens_get_invalid_grant_with_a_csp_error_body() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let past = SystemTime::now() - Duration::from_secs(60);
        server.add_api_token("expired-api-token-value-0123456789", Some(past));
        server.add_api_token(API_TOKEN, None);
        server.revoke_api_token(API_TOKEN);
        for token in ["never-issued-api-token-0123456789", "expired-api-token-value-0123456789", API_TOKEN] {
            let (status, body) = authorize(&server, format!("api_token={token}")).await;
            assert_eq!(status, 400, "{token}");
            assert_eq!(body["cspErrorCode"], "invalid_grant", "{body}");
            assert_eq!(body["statusCode"], 400);
            assert!(body["requestId"].is_string() && body["message"].as_str().unwrap().starts_with("invalid_grant"), "{body}");
        }
        assert!(server.issued().is_empty());
    })
    .await;
}

#[tokio::test]
async fn details_answer_expires_at_in_epoch_milliseconds_for_unexpired_tokens_only() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let in_six_months = UNIX_EPOCH + Duration::from_millis(1_811_000_000_123);
        server.add_api_token(API_TOKEN, Some(in_six_months));
        server.add_api_token("never-expiring-api-token-012345", None);
        let details =
            |value: &str| post(&server, API_TOKEN_DETAILS_PATH, "application/json", json!({"tokenValue": value}).to_string(), None);

        let (status, body) = details(API_TOKEN).await;
        assert_eq!((status, body["expiresAt"].as_u64()), (200, Some(1_811_000_000_123)), "{body}");
        let (status, body) = details("never-expiring-api-token-012345").await;
        assert_eq!(status, 200);
        assert!(body["expiresAt"].is_null(), "{body}");
        assert_eq!(details("unknown-api-token-0123456789").await.0, 400);
        server.revoke_api_token(API_TOKEN);
        assert_eq!(details(API_TOKEN).await.0, 400);
        let (status, _) = post(&server, API_TOKEN_DETAILS_PATH, FORM, format!("tokenValue={API_TOKEN}"), None).await;
        assert_eq!(status, 415, "details takes JSON");
    })
    .await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_the_spent_one_stops_working() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        server.add_refresh_token("seed-refresh-token-0123456789");

        let (status, first) = refresh(&server, "seed-refresh-token-0123456789").await;
        assert_eq!(status, 200, "{first}");
        let rotated = first["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(rotated, "seed-refresh-token-0123456789");
        assert_eq!(server.valid_refresh_tokens(), vec![rotated.clone()]);

        let (status, spent) = refresh(&server, "seed-refresh-token-0123456789").await;
        assert_eq!((status, spent["cspErrorCode"].as_str()), (400, Some("invalid_grant")), "{spent}");
        assert_eq!(refresh(&server, &rotated).await.0, 200);

        // The client's credentials are checked as for client credentials.
        let (status, _) =
            post(&server, CSP_PATH, FORM, format!("grant_type=refresh_token&refresh_token={rotated}"), Some("Basic eDp5".into())).await;
        assert_eq!(status, 400);

        server.set_keep_refresh_tokens(true);
        let current = server.valid_refresh_tokens()[0].clone();
        let (status, kept) = refresh(&server, &current).await;
        assert_eq!(status, 200);
        assert!(kept.get("refresh_token").is_none(), "{kept}");
        assert_eq!(server.valid_refresh_tokens(), vec![current]);
    })
    .await;
}
