//! The CSP exchanges besides client credentials:
//!
//! - `POST /csp/gateway/am/api/auth/api-tokens/authorize`: a CSP API token in the form field
//!   `api_token` (or the deprecated `refresh_token`), no client authentication. A token in the
//!   query string is rejected with 400, as CSP has done for years; an unknown, revoked or expired
//!   token gets 400 `invalid_grant` with a CSP error body that quotes the token's start, as CSP's
//!   messages do.
//! - `POST /csp/gateway/am/api/auth/api-tokens/details`: JSON `{"tokenValue": …}`, no
//!   authentication; answers `expiresAt` in epoch milliseconds (`null` for a token that never
//!   expires), for known unexpired tokens only (400 otherwise).
//! - `grant_type=refresh_token` at the token endpoint, with the client's Basic authorization:
//!   each use returns a new refresh token and spends the one sent, so a client that sends an
//!   older token of its chain gets 400 `invalid_grant`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Endpoint, NEXT_ID, RecordedRequest, Response, Shared, State, csp_response};

/// Path of CSP's API-token exchange.
pub const API_TOKEN_AUTHORIZE_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/authorize";
/// Path of CSP's API-token details call.
pub const API_TOKEN_DETAILS_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/details";

/// The API and refresh tokens the server knows.
#[derive(Debug, Default)]
pub(super) struct Grants {
    /// API tokens by value: their expiry (`None`: never) and whether they were revoked.
    api_tokens: HashMap<String, ApiToken>,
    /// Refresh tokens that are still good (each is spent by its use).
    refresh_tokens: Vec<String>,
    /// Refresh-token grants answer without a new refresh token (no rotation).
    keep_refresh_tokens: bool,
}

#[derive(Debug, Clone)]
struct ApiToken {
    expires_at: Option<SystemTime>,
    revoked: bool,
}

/// Answers the API-token paths; `None` for other paths.
pub(super) fn answer(shared: &Shared, request: &RecordedRequest) -> Option<Response> {
    let path = request.path.as_str();
    if path != API_TOKEN_AUTHORIZE_PATH && path != API_TOKEN_DETAILS_PATH {
        return None;
    }
    if request.method != "POST" {
        let mut response = Response::json(405, &json!({"error": "method_not_allowed", "message": "use POST"}));
        response.headers.push(("allow".to_owned(), "POST".to_owned()));
        return Some(response);
    }
    let mut state = shared.lock();
    Some(if path == API_TOKEN_AUTHORIZE_PATH { authorize(&mut state, request) } else { details(&state, request) })
}

fn authorize(state: &mut State, request: &RecordedRequest) -> Response {
    if request.query_param("api_token").is_some() || request.query_param("refresh_token").is_some() {
        return csp_response(
            400,
            "invalid_request",
            "Passing the API token as a query parameter is not supported; send it in the form body",
        );
    }
    let Some(api_token) = request.form_param("api_token").or_else(|| request.form_param("refresh_token")).filter(|t| !t.is_empty()) else {
        return csp_response(400, "invalid_request", "api_token is required");
    };
    if !state.grants.api_token_valid(api_token) {
        return csp_response(400, "invalid_grant", &format!("invalid_grant: Invalid refresh token: {}...", quoted_start(api_token)));
    }
    let token = state.mint(Endpoint::Csp, "api-token-org", None);
    Response::json(
        200,
        &json!({
            "access_token": token.access_token,
            "token_type": "bearer",
            "id_token": token.id_token,
            "expires_in": token.validity_secs,
            "scope": "openid",
            // CSP answers with the API token itself here.
            "refresh_token": api_token,
        }),
    )
}

fn details(state: &State, request: &RecordedRequest) -> Response {
    let is_json = request.header("content-type").is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == "application/json");
    if !is_json {
        return csp_response(415, "unsupported_media_type", "Content type must be application/json");
    }
    let body: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
    let Some(value) = body.get("tokenValue").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
        return csp_response(400, "invalid_request", "tokenValue is required");
    };
    let Some(token) = state.grants.api_tokens.get(value).filter(|_| state.grants.api_token_valid(value)) else {
        return csp_response(400, "invalid_grant", "The API token is invalid or expired");
    };
    let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    Response::json(
        200,
        &json!({
            "tokenId": format!("token-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            "tokenName": "testkit",
            "userName": "testkit-user",
            "domain": "testkit.example",
            "createdAt": millis(SystemTime::now()),
            "expiresAt": token.expires_at.map(millis),
        }),
    )
}

/// `grant_type=refresh_token` (the client's credentials are checked by the caller).
pub(super) fn refresh(state: &mut State, request: &RecordedRequest) -> Response {
    let Some(sent) = request.form_param("refresh_token").filter(|t| !t.is_empty()) else {
        return csp_response(400, "invalid_request", "refresh_token is required");
    };
    let Some(position) = state.grants.refresh_tokens.iter().position(|t| t == sent) else {
        return csp_response(400, "invalid_grant", &format!("invalid_grant: Invalid refresh token: {}...", quoted_start(sent)));
    };
    let requested = request.form_param("accessTokenValiditySeconds");
    let token = state.mint(Endpoint::Csp, "refresh-token-org", requested);
    let mut answer = json!({
        "access_token": token.access_token,
        "token_type": "bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "id_token": token.id_token,
        "expires_in": token.validity_secs,
        "scope": request.form_param("scope").unwrap_or_default(),
    });
    if !state.grants.keep_refresh_tokens {
        // Rotation: the token sent is spent, a new one takes its place.
        state.grants.refresh_tokens[position] = token.refresh_token.clone();
        answer["refresh_token"] = json!(token.refresh_token);
    }
    Response::json(200, &answer)
}

/// The first characters of a token, as CSP quotes them in its messages.
fn quoted_start(token: &str) -> &str {
    let end = token.char_indices().nth(10).map_or(token.len(), |(i, _)| i);
    &token[..end]
}

impl Grants {
    fn api_token_valid(&self, value: &str) -> bool {
        self.api_tokens.get(value).is_some_and(|t| !t.revoked && t.expires_at.is_none_or(|at| at > SystemTime::now()))
    }
}

impl super::TokenServer {
    /// Makes `api_token` a valid CSP API token expiring at `expires_at` (`None`: never); an
    /// existing one of that value is replaced (un-revoked).
    pub fn add_api_token(&self, api_token: &str, expires_at: Option<SystemTime>) {
        self.shared.lock().grants.api_tokens.insert(api_token.to_owned(), ApiToken { expires_at, revoked: false });
    }

    /// Revokes an API token: authorize and details answer 400 `invalid_grant` from now on.
    pub fn revoke_api_token(&self, api_token: &str) {
        if let Some(token) = self.shared.lock().grants.api_tokens.get_mut(api_token) {
            token.revoked = true;
        }
    }

    /// Makes `refresh_token` a good refresh token (the start of a chain).
    pub fn add_refresh_token(&self, refresh_token: &str) {
        self.shared.lock().grants.refresh_tokens.push(refresh_token.to_owned());
    }

    /// The refresh tokens that are good now (the newest of each chain).
    pub fn valid_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().grants.refresh_tokens.clone()
    }

    /// With `true`, refresh-token grants return no new refresh token and spend nothing.
    pub fn set_keep_refresh_tokens(&self, keep: bool) {
        self.shared.lock().grants.keep_refresh_tokens = keep;
    }
}
