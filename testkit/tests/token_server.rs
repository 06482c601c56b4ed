//! Tests of the token endpoint stand-in, through a real HTTP client (reqwest) and, for the
//! faults that live below HTTP, through raw TCP. Every test binds 127.0.0.1 only and runs
//! under a time bound.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use testkit::token_server::{CSP_PATH, Endpoint, NAVIGATOR_PATH, Scripted, TokenServer, TokenServerConfig, csp_error, jwt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ORG: &str = "0f5e8a1c-1111-4a2b-9c3d-123456789abc";
const FORM: &str = "application/x-www-form-urlencoded";

/// Fails the test instead of letting it hang.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f).await.expect("test exceeded its time bound")
}

/// reqwest is built without a crypto provider (as in the operator); ring is the one used.
fn install_ring() {
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client that does not follow redirects, so redirects can be seen.
fn client() -> reqwest::Client {
    install_ring();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("build client")
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn default_basic() -> String {
    let config = TokenServerConfig::default();
    basic(&config.client_id, &config.client_secret)
}

/// POSTs to the Navigator endpoint with `query` appended as is.
async fn navigator(client: &reqwest::Client, server: &TokenServer, query: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = client.post(format!("{}?{query}", server.url(Endpoint::Navigator))).header("content-type", FORM).body("");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("navigator request")
}

/// POSTs `form` to the CSP endpoint.
async fn csp(client: &reqwest::Client, server: &TokenServer, form: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = client.post(server.url(Endpoint::Csp)).header("content-type", FORM).body(form.to_owned());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.expect("csp request")
}

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("read body");
    serde_json::from_slice(&bytes).expect("body is JSON")
}

/// The claims of a JWT, decoded without verification.
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT has three parts: {token}");
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url claims");
    serde_json::from_slice(&payload).expect("claims are JSON")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn csp_form() -> String {
    format!("grant_type=client_credentials&orgId={ORG}")
}

/// Sends raw bytes on a fresh TCP connection.
async fn raw(server: &TokenServer, request: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write request");
    stream
}

fn raw_csp_request(connection: &str) -> String {
    let form = csp_form();
    format!(
        "POST {CSP_PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {}\r\ncontent-type: {FORM}\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{form}",
        default_basic(),
        form.len()
    )
}

/// Reads until the peer closes, returning what arrived and how the stream ended.
async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => return (data, Ok(())),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) => return (data, Err(e)),
        }
    }
}

#[tokio::test]
async fn navigator_issues_camel_case_tokens() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let before = now_secs();
        let response = navigator(&client(), &server, &format!("orgId={ORG}"), Some(&default_basic())).await;
        assert_eq!(response.status(), 200);
        let body = json_body(response).await;
        for key in ["accessToken", "idToken", "refreshToken", "returnUrl"] {
            assert!(body.get(key).is_some_and(Value::is_string), "{key} in {body}");
        }
        assert!(body.get("expires_in").is_none(), "Navigator has no expires_in");
        assert!(body.get("access_token").is_none());

        let access = body["accessToken"].as_str().unwrap_or_default();
        let c = claims(access);
        assert_eq!(c["iss"], "testkit");
        assert_eq!(c["context_name"], ORG);
        assert_eq!(c["sub"], TokenServerConfig::default().client_id);
        let exp = c["exp"].as_u64().expect("exp");
        assert_eq!(exp - c["iat"].as_u64().expect("iat"), 3600);
        assert!((before + 3600..=now_secs() + 3600).contains(&exp));

        let issued = server.issued();
        assert_eq!(issued.len(), 1);
        assert_eq!(issued[0].endpoint, Endpoint::Navigator);
        assert_eq!(issued[0].access_token, access);
        assert_eq!(issued[0].id_token, body["idToken"].as_str().unwrap_or_default());
        assert_eq!(issued[0].exp, exp);
        assert_eq!(issued[0].org, ORG);
    })
    .await;
}

#[tokio::test]
async fn navigator_validity_only_shortens_the_lifetime() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        for (requested, expected) in [("600", 600), ("99999", 3600), ("junk", 3600), ("0", 3600)] {
            let query = format!("orgId={ORG}&accessTokenValiditySeconds={requested}");
            let body = json_body(navigator(&client, &server, &query, Some(&auth)).await).await;
            let c = claims(body["accessToken"].as_str().unwrap_or_default());
            let lifetime = c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0);
            assert_eq!(lifetime, expected, "requested {requested}");
        }
    })
    .await;
}

#[tokio::test]
async fn csp_issues_snake_case_tokens_with_expires_in() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig { lifetime: Duration::from_secs(120), ..TokenServerConfig::default() }).await;
        let client = client();
        let auth = default_basic();
        let form = format!("{}&scope=openid%20ALL_PERMISSIONS", csp_form());
        let response = csp(&client, &server, &form, Some(&auth)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        let body = json_body(response).await;
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 120);
        assert_eq!(body["scope"], "openid ALL_PERMISSIONS");
        assert!(body["id_token"].is_string());
        assert!(body.get("accessToken").is_none());
        let c = claims(body["access_token"].as_str().unwrap_or_default());
        assert_eq!(c["context_name"], ORG);
        assert_eq!(c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0), 120);

        // A shorter requested validity wins, and expires_in follows it.
        let form = format!("{}&accessTokenValiditySeconds=30", csp_form());
        let body = json_body(csp(&client, &server, &form, Some(&auth)).await).await;
        assert_eq!(body["expires_in"], 30);
        let c = claims(body["access_token"].as_str().unwrap_or_default());
        assert_eq!(c["exp"].as_u64().unwrap_or(0) - c["iat"].as_u64().unwrap_or(0), 30);

        assert_eq!(server.issued().len(), 2);
        assert!(server.issued().iter().all(|t| t.endpoint == Endpoint::Csp));
    })
    .await;
}

#[tokio::test]
async fn every_token_is_unique() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        let mut tokens = std::collections::HashSet::new();
        for _ in 0..5 {
            let body = json_body(csp(&client, &server, &csp_form(), Some(&auth)).await).await;
            tokens.insert(body["access_token"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(tokens.len(), 5);
        assert_eq!(server.issued().len(), 5);
    })
    .await;
}

#[tokio::test]
async fn lifetime_and_credentials_can_change() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let old = default_basic();

        server.set_lifetime(Duration::from_secs(45));
        let body = json_body(csp(&client, &server, &csp_form(), Some(&old)).await).await;
        assert_eq!(body["expires_in"], 45);

        server.set_credentials("rotated-id", "rotated-secret");
        let new = basic("rotated-id", "rotated-secret");
        let query = format!("orgId={ORG}");
        assert_eq!(navigator(&client, &server, &query, Some(&old)).await.status(), 401);
        let response = csp(&client, &server, &csp_form(), Some(&old)).await;
        assert_eq!(response.status(), 400);
        assert_eq!(json_body(response).await["cspErrorCode"], "invalid_client");
        assert_eq!(navigator(&client, &server, &query, Some(&new)).await.status(), 200);
        let body = json_body(csp(&client, &server, &csp_form(), Some(&new)).await).await;
        assert_eq!(claims(body["access_token"].as_str().unwrap_or_default())["sub"], "rotated-id");
    })
    .await;
}

#[tokio::test]
async fn public_client_sends_an_empty_secret() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig {
            client_id: "public-app".to_owned(),
            client_secret: String::new(),
            ..TokenServerConfig::default()
        })
        .await;
        let client = client();
        let public = basic("public-app", "");
        assert_eq!(csp(&client, &server, &csp_form(), Some(&public)).await.status(), 200);
        let with_secret = basic("public-app", "x");
        assert_eq!(csp(&client, &server, &csp_form(), Some(&with_secret)).await.status(), 400);
        assert_eq!(server.requests()[0].basic_credentials(), Some(("public-app".to_owned(), String::new())));
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_the_documented_errors() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        let wrong = basic("testkit-client", "wrong");
        let query = format!("orgId={ORG}");

        // Navigator: 401 for credentials (missing, wrong, not Basic), 400 without orgId.
        assert_eq!(navigator(&client, &server, &query, None).await.status(), 401);
        let response = navigator(&client, &server, &query, Some(&wrong)).await;
        assert_eq!(response.status(), 401);
        assert!(json_body(response).await["message"].is_string());
        assert_eq!(navigator(&client, &server, &query, Some("Bearer abc")).await.status(), 401);
        assert_eq!(navigator(&client, &server, "orgId=", Some(&auth)).await.status(), 400);
        assert_eq!(navigator(&client, &server, "x=1", Some(&auth)).await.status(), 400);

        // CSP: 400 with a CspErrorResponse body in each case.
        let cases = [
            (csp_form(), None, "invalid_client"),
            (csp_form(), Some(wrong.as_str()), "invalid_client"),
            (format!("grant_type=password&orgId={ORG}"), Some(auth.as_str()), "unsupported_grant_type"),
            // The refresh-token grant is understood (see tests/csp_grants.rs), but needs its token.
            (format!("grant_type=refresh_token&orgId={ORG}"), Some(auth.as_str()), "invalid_request"),
            (format!("orgId={ORG}"), Some(auth.as_str()), "invalid_request"),
            ("grant_type=client_credentials".to_owned(), Some(auth.as_str()), "invalid_request"),
        ];
        for (form, auth, code) in cases {
            let response = csp(&client, &server, &form, auth).await;
            assert_eq!(response.status(), 400, "{form}");
            let body = json_body(response).await;
            assert_eq!(body["cspErrorCode"], code, "{form}");
            assert_eq!(body["statusCode"], 400);
            for key in ["message", "errorCode", "requestId", "moduleCode"] {
                assert!(body.get(key).is_some(), "{key} in {body}");
            }
        }

        // A form body sent without the form content type is not read as a form.
        let response = client
            .post(server.url(Endpoint::Csp))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(csp_form())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400);

        // Unknown paths and other methods.
        let response = client.post(format!("{}/nope", server.base_url())).send().await.expect("request");
        assert_eq!(response.status(), 404);
        let response = client.get(server.url(Endpoint::Csp)).send().await.expect("request");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers().get("allow").and_then(|v| v.to_str().ok()), Some("POST"));

        assert!(server.issued().is_empty(), "no error case issues a token");
    })
    .await;
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        let start = SystemTime::now();
        navigator(&client, &server, &format!("orgId={ORG}&accessTokenValiditySeconds=60"), Some(&auth)).await;
        let form = format!("{}&scope=a%20b", csp_form());
        csp(&client, &server, &form, Some(&auth)).await;

        assert_eq!(server.request_count(), 2);
        let requests = server.requests();
        let nav = &requests[0];
        assert_eq!(nav.method, "POST");
        assert_eq!(nav.path, NAVIGATOR_PATH);
        assert_eq!(nav.query_param("orgId"), Some(ORG));
        assert_eq!(nav.query_param("accessTokenValiditySeconds"), Some("60"));
        assert_eq!(nav.header("Authorization"), Some(auth.as_str()));
        assert!(nav.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));
        assert_eq!(nav.body, "");
        assert!(nav.at >= start);

        let token = &requests[1];
        assert_eq!(token.path, CSP_PATH);
        assert!(token.query.is_empty());
        assert_eq!(token.body, form);
        assert_eq!(token.form_param("grant_type"), Some("client_credentials"));
        assert_eq!(token.form_param("orgId"), Some(ORG));
        assert_eq!(token.form_param("scope"), Some("a b"));
        assert!(token.at >= nav.at);
        let config = TokenServerConfig::default();
        assert_eq!(token.basic_credentials(), Some((config.client_id, config.client_secret)));
    })
    .await;
}

#[tokio::test]
async fn scripted_responses_come_in_order_then_normal_issuing() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        server.push_response(Scripted::Status {
            code: 429,
            body: "slow down".to_owned(),
            content_type: "text/plain".to_owned(),
            headers: vec![("retry-after".to_owned(), "7".to_owned())],
        });
        server.push_response(Scripted::Json(json!({"access_token": "", "expires_in": "soon"})));
        server.push_response(Scripted::RawBody("{\"access_token\": ".to_owned()));
        server.push_response(csp_error(503, "unavailable", "try later", "req-1"));
        server.push_response(Scripted::status(500, "text/html", "<html>oops</html>"));

        let first = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(first.status(), 429);
        assert_eq!(first.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
        assert_eq!(first.text().await.expect("body"), "slow down");

        let second = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(second.status(), 200);
        assert_eq!(json_body(second).await, json!({"access_token": "", "expires_in": "soon"}));

        let third = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(third.status(), 200);
        assert_eq!(third.text().await.expect("body"), "{\"access_token\": ");

        let fourth = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(fourth.status(), 503);
        let body = json_body(fourth).await;
        assert_eq!(body["cspErrorCode"], "unavailable");
        assert_eq!(body["message"], "try later");
        assert_eq!(body["requestId"], "req-1");
        assert_eq!(body["statusCode"], 503);

        let fifth = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(fifth.status(), 500);
        assert_eq!(fifth.text().await.expect("body"), "<html>oops</html>");

        // Queue drained: back to normal issuing. Scripted answers issued nothing.
        assert!(server.issued().is_empty());
        let normal = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(normal.status(), 200);
        assert_eq!(server.issued().len(), 1);
        assert_eq!(server.request_count(), 6);
    })
    .await;
}

#[tokio::test]
async fn default_misbehaviour_persists_until_cleared_and_queue_goes_first() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        server.set_default(Some(csp_error(500, "internal", "down", "r")));
        server.push_response(Scripted::Json(json!({"queued": true})));

        let queued = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(json_body(queued).await, json!({"queued": true}));
        for _ in 0..3 {
            let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
            assert_eq!(response.status(), 500);
        }
        server.set_default(None);
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn redirect_and_delay() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        server.push_response(Scripted::Redirect { location: "https://elsewhere.invalid/token".to_owned(), code: 307 });
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 307);
        assert_eq!(response.headers().get("location").and_then(|v| v.to_str().ok()), Some("https://elsewhere.invalid/token"));

        server.push_response(Scripted::Delay(Duration::from_millis(300)));
        let started = Instant::now();
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(response.status(), 200);
        assert_eq!(server.issued().len(), 1, "a delayed request is issued normally");

        // Delay still validates: bad credentials are refused after the pause.
        server.push_response(Scripted::Delay(Duration::from_millis(10)));
        let response = csp(&client, &server, &csp_form(), None).await;
        assert_eq!(response.status(), 400);
    })
    .await;
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        server.push_response(Scripted::Hang);
        let client = client();
        let auth = default_basic();
        let waited = tokio::time::timeout(Duration::from_millis(500), csp(&client, &server, &csp_form(), Some(&auth))).await;
        assert!(waited.is_err(), "a hung request must not be answered");
        assert_eq!(server.request_count(), 1, "the hung request was still read");

        // Over raw TCP: silence, then the connection closes once the server shuts down.
        server.push_response(Scripted::Hang);
        let mut stream = raw(&server, &raw_csp_request("keep-alive")).await;
        let mut byte = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
        assert!(silent.is_err(), "no byte may arrive");
        server.shutdown();
        let (data, _) = read_to_end(&mut stream).await;
        assert!(data.is_empty());
    })
    .await;
}

#[tokio::test]
async fn trickle_sends_a_head_then_a_byte_at_a_time() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        server.push_response(Scripted::Trickle { interval: Duration::from_millis(50) });
        let client = client();
        let auth = default_basic();
        let mut response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);

        let started = Instant::now();
        let mut received = 0;
        while started.elapsed() < Duration::from_millis(500) {
            let chunk = tokio::time::timeout(Duration::from_secs(2), response.chunk())
                .await
                .expect("a byte arrives every interval")
                .expect("read chunk")
                .expect("body continues");
            assert!(chunk.iter().all(|b| *b == b' '));
            received += chunk.len();
        }
        // About ten bytes in half a second; far fewer than a normal response delivers.
        assert!((3..=20).contains(&received), "received {received} bytes");

        // The body never ends by itself.
        let rest = tokio::time::timeout(Duration::from_millis(300), response.bytes()).await;
        assert!(rest.is_err(), "a trickling body must not complete");
    })
    .await;
}

#[tokio::test]
async fn reset_aborts_the_connection() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();

        server.push_response(Scripted::Reset);
        let result = client
            .post(server.url(Endpoint::Csp))
            .header("authorization", &auth)
            .header("content-type", FORM)
            .body(csp_form())
            .send()
            .await;
        let error = result.expect_err("a reset connection is an error");
        assert!(!error.is_timeout());

        // Over raw TCP the stream ends in a reset, not a clean close.
        server.push_response(Scripted::Reset);
        let mut stream = raw(&server, &raw_csp_request("keep-alive")).await;
        let (data, end) = read_to_end(&mut stream).await;
        assert!(
            b"HTTP/1.1 200 OK\r\ncontent-type: applic".starts_with(&data),
            "at most the partial head arrives: {:?}",
            String::from_utf8_lossy(&data)
        );
        let error = end.expect_err("the stream must end with an error");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);

        // The server itself keeps working.
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn huge_delivers_exactly_the_byte_count() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let client = client();
        let auth = default_basic();
        let size = 5_000_000;
        server.push_response(Scripted::Huge { bytes: size });
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.content_length(), Some(size as u64));
        let body = response.bytes().await.expect("read body");
        assert_eq!(body.len(), size);
        assert!(body.starts_with(b"{\"access_token\":\"xxx"));
        assert!(body.ends_with(b"x\"}"));

        // Tiny sizes are exact too, and the connection stays usable afterwards.
        server.push_response(Scripted::Huge { bytes: 3 });
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.bytes().await.expect("read body").len(), 3);
        let response = csp(&client, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn tls_mode_serves_https_trusted_through_the_ca_pem() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await;
        assert!(server.base_url().starts_with("https://127.0.0.1:"));
        let pem = server.ca_pem().expect("a CA in TLS mode");
        assert!(pem.contains("BEGIN CERTIFICATE"));

        install_ring();
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("parse CA");
        let trusting = reqwest::Client::builder()
            .tls_certs_only([ca])
            // localhost must be valid too; pin it to the server's address.
            .resolve("localhost", server.local_addr())
            .build()
            .expect("build client");
        let auth = default_basic();
        let response = csp(&trusting, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_body(response).await["expires_in"], 3600);

        let by_name = format!("https://localhost:{}{NAVIGATOR_PATH}?orgId={ORG}", server.local_addr().port());
        let response = trusting.post(by_name).header("authorization", &auth).send().await.expect("request by name");
        assert_eq!(response.status(), 200);

        // Scripted answers work over TLS too.
        server.push_response(Scripted::Huge { bytes: 100_000 });
        let response = csp(&trusting, &server, &csp_form(), Some(&auth)).await;
        assert_eq!(response.bytes().await.expect("body").len(), 100_000);

        // A reset after the handshake, mid-response, is an error over TLS as well.
        server.push_response(Scripted::Reset);
        let result = trusting
            .post(server.url(Endpoint::Csp))
            .header("authorization", &auth)
            .header("content-type", FORM)
            .body(csp_form())
            .send()
            .await;
        assert!(result.is_err(), "a reset over TLS is an error");

        // A client that does not trust the CA is refused.
        let other = TokenServer::start(TokenServerConfig { tls: true, ..TokenServerConfig::default() }).await;
        let other_ca = reqwest::Certificate::from_pem(other.ca_pem().unwrap_or_default().as_bytes()).expect("parse other CA");
        let untrusting = reqwest::Client::builder().tls_certs_only([other_ca]).build().expect("build client");
        let result = untrusting.post(server.url(Endpoint::Csp)).body(csp_form()).send().await;
        assert!(result.is_err(), "an untrusted certificate must fail");
        assert_eq!(server.request_count(), 4, "the refused client sent no request");
    })
    .await;
}

#[tokio::test]
async fn plain_http_mode_has_no_ca() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        assert!(server.base_url().starts_with("http://127.0.0.1:"));
        assert_eq!(server.ca_pem(), None);
        assert_eq!(server.url(Endpoint::Csp), format!("{}{CSP_PATH}", server.base_url()));
    })
    .await;
}

#[tokio::test]
async fn one_connection_carries_several_requests() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        // Two requests written back to back (pipelined) on one connection, the second asking
        // to close: both are answered, then the server closes.
        let both = format!("{}{}", raw_csp_request("keep-alive"), raw_csp_request("close"));
        let mut stream = raw(&server, &both).await;
        let (data, end) = read_to_end(&mut stream).await;
        assert!(end.is_ok());
        let text = String::from_utf8_lossy(&data);
        assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
        assert_eq!(text.matches("connection: close").count(), 1, "{text}");
        assert_eq!(server.issued().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn expect_continue_and_http10_are_understood() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let form = csp_form();
        let head = format!(
            "POST {CSP_PATH} HTTP/1.1\r\nauthorization: {}\r\ncontent-type: {FORM}\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
            default_basic(),
            form.len()
        );
        let mut stream = raw(&server, &head).await;
        let mut interim = [0u8; 25];
        stream
            .read_exact(&mut interim)
            .await
            .expect("interim response");
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(form.as_bytes()).await.expect("write body");
        let (data, _) = read_to_end(&mut stream).await;
        assert!(String::from_utf8_lossy(&data).starts_with("HTTP/1.1 200 OK\r\n"));

        // HTTP/1.0 without keep-alive: answered, then closed by the server.
        let request = raw_csp_request("x").replace("HTTP/1.1", "HTTP/1.0");
        let mut stream = raw(&server, &request).await;
        let (data, end) = read_to_end(&mut stream).await;
        assert!(end.is_ok());
        let text = String::from_utf8_lossy(&data);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn malformed_input_gets_an_error_and_the_server_survives() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let cases = [
            ("garbage\r\n\r\n", "400"),
            ("POST /x HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
            ("POST /x HTTP/1.1\r\ncontent-length: lots\r\n\r\n", "400"),
            ("POST /x HTTP/1.1\r\ncontent-length: 999999999\r\n\r\n", "413"),
            ("POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", "501"),
            ("POST /x HTTP/2.0\r\n\r\n", "505"),
        ];
        for (request, status) in cases {
            let mut stream = raw(&server, request).await;
            let (data, _) = read_to_end(&mut stream).await;
            let text = String::from_utf8_lossy(&data);
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{request:?} -> {text}");
        }
        // An oversized head is refused rather than buffered without bound.
        let huge_head = format!("POST /x HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(100_000));
        let mut stream = raw(&server, &huge_head).await;
        let (data, _) = read_to_end(&mut stream).await;
        assert!(String::from_utf8_lossy(&data).starts_with("HTTP/1.1 431 "));
        assert_eq!(server.request_count(), 0, "unparsable requests are not recorded");

        let response = csp(&client(), &server, &csp_form(), Some(&default_basic())).await;
        assert_eq!(response.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    bounded(async {
        let server = TokenServer::start(TokenServerConfig::default()).await;
        let addr = server.local_addr();
        assert!(TcpStream::connect(addr).await.is_ok());
        server.shutdown();
        server.shutdown(); // idempotent
        assert!(refused_soon(addr).await, "shutdown closes the listener");

        let server = TokenServer::start(TokenServerConfig::default()).await;
        let addr = server.local_addr();
        drop(server);
        assert!(refused_soon(addr).await, "drop closes the listener");
    })
    .await;
}

/// Whether connecting to `addr` is refused within a second (the listener closes
/// asynchronously after shutdown).
async fn refused_soon(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn jwt_encodes_the_given_claims() {
    let token = jwt(&json!({"exp": 1_700_000_000u64, "sub": "x"}));
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap_or_default()).expect("header JSON");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims(&token), json!({"exp": 1_700_000_000u64, "sub": "x"}));
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default(), b"sig");
}
