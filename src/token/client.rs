//! HTTP client for both token endpoints: request building, response parsing, expiry derivation.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::{SignedDuration, Timestamp};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::time::Instant;

use super::proxy::EgressProxy;
use super::{EndpointType, ExpirySource, Grant, IssuedToken, TokenError, TokenRequest, UpstreamDetail, jwt};
use crate::redact::Sensitive;

/// Tokens that claim to live longer than this are treated as a broken endpoint.
pub const MAX_PLAUSIBLE_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 400);
/// Longest upstream error message kept for status and events.
pub const MAX_DETAIL_CHARS: usize = 300;
/// Longest Retry-After honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Limits and policy for the token client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout, body included.
    pub request_timeout: Duration,
    /// Largest response body read.
    pub max_body_bytes: usize,
    /// Hosts a NavigatorToken may name; `None` allows any (only for tests and the `token` command).
    pub allowed_hosts: Option<Vec<String>>,
    /// Global cap on token requests per second; `None` is unlimited.
    pub requests_per_second: Option<f64>,
    /// The egress proxy for https endpoints, if any.
    pub proxy: Option<EgressProxy>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_body_bytes: 64 * 1024,
            allowed_hosts: Some(vec!["console.navigator.vmware.com".into(), "console.cloud.vmware.com".into()]),
            requests_per_second: None,
            proxy: None,
        }
    }
}

/// Issues tokens. Cheap to share: one connection pool per distinct CA bundle.
#[derive(Clone)]
pub struct TokenClient {
    options: ClientOptions,
    default_client: reqwest::Client,
    clients_by_ca_bundle: Arc<Mutex<HashMap<String, reqwest::Client>>>,
    next_slot: Arc<tokio::sync::Mutex<Instant>>,
}

impl TokenClient {
    /// Builds a client with the public roots trusted.
    pub fn new(options: ClientOptions) -> Result<Self, TokenError> {
        let default_client = build_http_client(&options, None)?;
        Ok(TokenClient {
            options,
            default_client,
            clients_by_ca_bundle: Arc::default(),
            next_slot: Arc::new(tokio::sync::Mutex::new(Instant::now())),
        })
    }

    /// The options it was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Requests one token and resolves its expiry.
    pub async fn issue(&self, request: &TokenRequest) -> Result<IssuedToken, TokenError> {
        let mut url = self.checked_url(request)?;
        let client = self.client_for(request.ca_bundle.as_deref())?;
        self.wait_for_rate_limit().await;

        let validity = request.validity.map(|v| v.as_secs().max(1).to_string());
        let mut form: Vec<(&str, String)> = Vec::new();
        match (request.endpoint_type, &request.grant) {
            (EndpointType::Navigator, _) => {
                let mut query = url.query_pairs_mut();
                query.append_pair("orgId", &request.org_id);
                if let Some(validity) = &validity {
                    query.append_pair("accessTokenValiditySeconds", validity);
                }
            }
            (EndpointType::Csp, Grant::ClientCredentials { .. }) => {
                form.push(("grant_type", "client_credentials".into()));
                form.push(("orgId", request.org_id.clone()));
                form.extend(request.scope.clone().map(|scope| ("scope", scope)));
                form.extend(validity.map(|v| ("accessTokenValiditySeconds", v)));
            }
            // The refresh token carries its organization: orgId is for client_credentials only.
            (EndpointType::Csp, Grant::RefreshToken { refresh_token, .. }) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh_token.expose().to_owned()));
                form.extend(request.scope.clone().map(|scope| ("scope", scope)));
                form.extend(validity.map(|v| ("accessTokenValiditySeconds", v)));
            }
            // `api_token` is the documented field (`refresh_token` the deprecated one); in the
            // query string the token would be rejected (and logged by every proxy on the way).
            (EndpointType::Csp, Grant::ApiToken(token)) => form.push(("api_token", token.expose().to_owned())),
        }
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let basic = request.grant.client().map(|(id, secret)| STANDARD.encode(format!("{id}:{}", secret.expose())));
        let mut scrub = request.grant.secrets();
        scrub.extend(basic.as_deref());
        let mut post = client.post(url).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(basic) = &basic {
            post = post.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        let issued_at = Timestamp::now();
        let answer = self.send(post.body(body), issued_at, &scrub).await?;
        if !answer.status.is_success() {
            return Err(grant_error(&request.grant, answer.error(&scrub)));
        }
        parse_token(request.endpoint_type, &answer.bytes, issued_at, request.validity)
    }

    /// Sends a prepared POST (JSON accepted) and reads its answer, capped; a redirect is an error.
    pub(super) async fn send(&self, post: reqwest::RequestBuilder, now: Timestamp, scrub: &[&str]) -> Result<Answer, TokenError> {
        let response = post.header(reqwest::header::ACCEPT, "application/json").send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, now));
        let bytes = self.read_capped(response).await?;
        if status.is_redirection() {
            return Err(TokenError::Redirected { status: status.as_u16(), location: sanitize(&location, scrub) });
        }
        Ok(Answer { status, retry_after, bytes })
    }

    /// The URL of the token endpoint `request` goes to, checked against the operator's policy.
    pub fn checked_url(&self, request: &TokenRequest) -> Result<reqwest::Url, TokenError> {
        let path = match (request.endpoint_type, &request.grant) {
            (EndpointType::Navigator, Grant::ClientCredentials { .. }) => "/cphub/api/auth/v2/authn/authorize",
            (EndpointType::Navigator, Grant::ApiToken(_)) => return Err(TokenError::UnsupportedGrant("API tokens")),
            (EndpointType::Navigator, Grant::RefreshToken { .. }) => return Err(TokenError::UnsupportedGrant("refresh tokens")),
            (EndpointType::Csp, Grant::ApiToken(_)) => API_TOKEN_AUTHORIZE_PATH,
            (EndpointType::Csp, _) => "/csp/gateway/am/api/auth/token",
        };
        self.checked_endpoint(&request.base_url, path, request.ca_bundle.is_some())
    }

    /// `base_url` + `path`, if the operator may send credentials there.
    pub(super) fn checked_endpoint(&self, base_url: &str, path: &str, has_ca_bundle: bool) -> Result<reqwest::Url, TokenError> {
        let url = reqwest::Url::parse(&format!("{}{path}", base_url.trim_end_matches('/')))
            .map_err(|e| TokenError::InvalidEndpoint(format!("url {:?}: {e}", without_userinfo(base_url))))?;
        let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TokenError::InvalidEndpoint("url must not contain credentials".into()));
        }
        // The endpoint path is appended: after a `?` or `#` it would not be the path requested.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(TokenError::InvalidEndpoint("url must not have a query or fragment".into()));
        }
        if let Some(allowed) = &self.options.allowed_hosts
            && !allowed.iter().any(|a| a.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(&host))
        {
            return Err(TokenError::EndpointNotAllowed { host, allowed: allowed.join(",") });
        }
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => Ok(url),
            "http" if loopback && !has_ca_bundle => Ok(url),
            _ => Err(TokenError::InvalidEndpoint(format!(
                "url {:?} must be https (plain http only for loopback hosts, without caBundle)",
                base_url
            ))),
        }
    }

    pub(super) fn client_for(&self, ca_bundle: Option<&str>) -> Result<reqwest::Client, TokenError> {
        let Some(bundle) = ca_bundle else {
            return Ok(self.default_client.clone());
        };
        let mut clients = self.clients_by_ca_bundle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(bundle) {
            return Ok(client.clone());
        }
        let client = build_http_client(&self.options, Some(bundle))?;
        clients.insert(bundle.to_owned(), client.clone());
        Ok(client)
    }

    /// Spaces requests evenly so that many tokens due at once never cause a 429 storm.
    pub(super) async fn wait_for_rate_limit(&self) {
        let Some(rate) = self.options.requests_per_second.filter(|r| *r > 0.0) else {
            return;
        };
        let slot = {
            let mut next = self.next_slot.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    async fn read_capped(&self, mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
        let limit = self.options.max_body_bytes;
        if response.content_length().is_some_and(|len| len as usize > limit) {
            return Err(TokenError::ResponseTooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(TokenError::ResponseTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, error: &reqwest::Error) -> TokenError {
        let proxy = self.options.proxy.as_ref().filter(|p| error.url().is_some_and(|url| p.applies_to(url)));
        // Through a proxy, a failed connect is the proxy's (or its tunnel's): say so, not
        // "cannot connect to the token endpoint". TLS errors come from inside the tunnel.
        if let Some(proxy) = proxy
            && error.is_connect()
            && !error_chain(error).any(is_rustls_error)
        {
            let cause = if error.is_timeout() {
                format!("no answer within {}s", self.options.connect_timeout.as_secs_f32())
            } else {
                let password = proxy.url().password().unwrap_or_default();
                sanitize(&causes(error), &[password])
            };
            return TokenError::Proxy { proxy: proxy.to_string(), cause };
        }
        let at = self.where_sent(error.url(), proxy);
        if error.is_timeout() {
            return TokenError::Timeout(self.options.request_timeout, at);
        }
        let message = causes(error);
        if error_chain(error).any(is_rustls_error) {
            TokenError::Tls(at, message)
        } else if error.is_connect() {
            TokenError::Connect(at, message)
        } else {
            TokenError::Transport(at, message)
        }
    }

    /// "console.cloud.vmware.com:443 (direct, no proxy set)": where a failed request went.
    fn where_sent(&self, url: Option<&reqwest::Url>, proxy: Option<&EgressProxy>) -> String {
        let endpoint = url
            .and_then(|url| Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?)))
            .unwrap_or_else(|| "(unknown host)".to_owned());
        let route = match (proxy, &self.options.proxy) {
            (Some(proxy), _) => format!("through the egress proxy {proxy}"),
            (None, Some(_)) => "direct: NO_PROXY or a loopback host exempts it from the proxy".to_owned(),
            (None, None) => "direct, no proxy set".to_owned(),
        };
        format!("{endpoint} ({route})")
    }
}

/// Path of CSP's API-token exchange.
pub const API_TOKEN_AUTHORIZE_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/authorize";

/// A non-redirect HTTP answer, its body read (capped).
pub(super) struct Answer {
    pub(super) status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    pub(super) bytes: Vec<u8>,
}

impl Answer {
    /// The error a non-success answer stands for, by status.
    pub(super) fn error(&self, scrub: &[&str]) -> TokenError {
        let detail = parse_detail(&self.bytes, scrub);
        match self.status.as_u16() {
            400 => TokenError::BadRequest(detail),
            401 => TokenError::Unauthorized(detail),
            403 => TokenError::Forbidden(detail),
            404 => TokenError::NotFound(detail),
            429 => TokenError::RateLimited { retry_after: self.retry_after, detail },
            code @ 500..=599 => TokenError::Unavailable { status: code, detail },
            code => TokenError::UnexpectedStatus { status: code, detail },
        }
    }
}

/// Refines an error by the grant: CSP answers a bad API or refresh token with `invalid_grant`
/// (and a bad API token also with 401/403), which only new credentials can fix.
fn grant_error(grant: &Grant, error: TokenError) -> TokenError {
    let invalid_grant = |detail: &UpstreamDetail| {
        detail.csp_error_code.as_deref() == Some("invalid_grant")
            || detail.message.as_deref().is_some_and(|m| m.starts_with("invalid_grant"))
    };
    match (grant, error) {
        (Grant::ApiToken(_), TokenError::BadRequest(detail)) if invalid_grant(&detail) => {
            TokenError::ApiTokenInvalid { status: 400, detail }
        }
        (Grant::ApiToken(_), TokenError::Unauthorized(detail)) => TokenError::ApiTokenInvalid { status: 401, detail },
        (Grant::ApiToken(_), TokenError::Forbidden(detail)) => TokenError::ApiTokenInvalid { status: 403, detail },
        (Grant::RefreshToken { .. }, TokenError::BadRequest(detail)) if invalid_grant(&detail) => {
            TokenError::RefreshTokenInvalid { status: 400, detail }
        }
        (_, other) => other,
    }
}

/// The errors behind a reqwest error, outermost first.
fn error_chain(error: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(error.source(), |&cause| cause.source())
}

/// reqwest's own message names the URL only; the useful part is in the sources.
fn causes(error: &reqwest::Error) -> String {
    let mut causes: Vec<String> = error_chain(error).map(|cause| cause.to_string()).collect();
    causes.dedup();
    if causes.is_empty() { error.to_string() } else { causes.join(": ") }
}

/// rustls errors arrive wrapped in (possibly nested) io::Errors, whose `source()` skips them.
fn is_rustls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    if error.is::<rustls::Error>() {
        return true;
    }
    let inner = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
    inner.is_some_and(|inner| is_rustls_error(inner))
}

fn build_http_client(options: &ClientOptions, ca_bundle: Option<&str>) -> Result<reqwest::Client, TokenError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = match ca_bundle {
        Some(bundle) => ca_bundle_roots(bundle)?,
        None => rustls::RootCertStore::empty(),
    };
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TokenError::InvalidEndpoint(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // No proxy from reqwest's own reading of the environment: `EgressProxy` decides.
        .no_proxy();
    if let Some(proxy) = options.proxy.clone() {
        builder = builder.proxy(reqwest::Proxy::custom(move |url| proxy.applies_to(url).then(|| proxy.url().clone())));
    }
    builder
        .user_agent(concat!("navigator-token-operator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TokenError::InvalidEndpoint(format!("HTTP client setup: {e}")))
}

/// The trust anchors of a PEM `caBundle`: at least one, each a certificate rustls accepts.
pub fn ca_bundle_roots(bundle: &str) -> Result<rustls::RootCertStore, TokenError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TokenError::InvalidEndpoint(format!("caBundle is not valid PEM: {}", bounded(&e.to_string()))))?;
    if certs.is_empty() {
        return Err(TokenError::InvalidEndpoint("caBundle holds no certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TokenError::InvalidEndpoint(format!("caBundle certificate rejected: {e}")))?;
    }
    Ok(roots)
}

/// The 200 body of either endpoint. Unknown fields (Navigator's refreshToken, returnUrl, scope…)
/// are ignored; CSP's `refresh_token` is kept for the refresh-token grant.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(alias = "accessToken")]
    access_token: Option<String>,
    #[serde(alias = "idToken")]
    id_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
}

pub fn parse_token(
    endpoint: EndpointType,
    body: &[u8],
    issued_at: Timestamp,
    validity: Option<Duration>,
) -> Result<IssuedToken, TokenError> {
    // serde's message can quote a value from the body, so only its category and position are kept.
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| TokenError::MalformedResponse(format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())))?;
    let field = match endpoint {
        EndpointType::Navigator => "accessToken",
        EndpointType::Csp => "access_token",
    };
    let access_token = parsed.access_token.filter(|t| !t.trim().is_empty()).ok_or(TokenError::MissingToken(field))?;
    let expires_in = parsed.expires_in.as_ref().and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));

    let (expires_at, expiry_source) = if let Some(seconds) = expires_in {
        (offset(issued_at, seconds)?, ExpirySource::ExpiresIn)
    } else if let Some(exp) = jwt::expiry(&access_token) {
        let at = Timestamp::from_second(exp).map_err(|_| TokenError::ImplausibleExpiry(Timestamp::MAX))?;
        (at, ExpirySource::JwtExp)
    } else if let Some(validity) = validity {
        (offset(issued_at, validity.as_secs_f64())?, ExpirySource::RequestedValidity)
    } else {
        return Err(TokenError::UnknownExpiry);
    };
    if expires_at <= Timestamp::now() {
        return Err(TokenError::AlreadyExpired(expires_at));
    }
    if expires_at.duration_since(issued_at) > MAX_PLAUSIBLE_LIFETIME {
        return Err(TokenError::ImplausibleExpiry(expires_at));
    }
    Ok(IssuedToken {
        access_token: Sensitive::new(access_token),
        id_token: parsed.id_token.filter(|t| !t.is_empty()).map(Sensitive::new),
        issued_at,
        expires_at,
        expiry_source,
        refresh_token: parsed.refresh_token.filter(|t| !t.trim().is_empty()).map(Sensitive::new),
    })
}

fn offset(from: Timestamp, seconds: f64) -> Result<Timestamp, TokenError> {
    let span = SignedDuration::try_from_secs_f64(seconds).map_err(|_| TokenError::ImplausibleExpiry(Timestamp::MAX))?;
    from.checked_add(span).map_err(|_| TokenError::ImplausibleExpiry(Timestamp::MAX))
}

/// Extracts CSP / generic error fields; an HTML page or other text yields no message.
pub fn parse_detail(body: &[u8], scrub: &[&str]) -> UpstreamDetail {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        csp_error_code: Option<String>,
        message: Option<String>,
        error_description: Option<String>,
        error: Option<String>,
        request_id: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return UpstreamDetail::default();
    };
    let clean = |s: Option<String>| s.map(|s| sanitize(&s, scrub)).filter(|s| !s.is_empty());
    UpstreamDetail {
        csp_error_code: clean(parsed.csp_error_code.or(parsed.error)),
        message: clean(parsed.message.or(parsed.error_description)),
        request_id: clean(parsed.request_id),
    }
}

/// Makes upstream text safe to show: no control characters, bounded, and never an echoed credential.
pub fn sanitize(text: &str, scrub: &[&str]) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).collect();
    // Scrub before truncating: a secret cut at the limit would otherwise show its first part.
    for secret in scrub.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "<redacted>");
    }
    out = without_fragments(&out, scrub);
    out.chars().take(MAX_DETAIL_CHARS).collect::<String>().trim().to_owned()
}

/// Shortest piece of a secret that counts as quoting it.
const MIN_FRAGMENT: usize = 8;

/// `text` with every word that is a piece of a long secret replaced: an endpoint that quotes
/// the start of a token it rejects ("Invalid refresh token: AbCd1234...") still shows part of it.
pub(crate) fn without_fragments(text: &str, scrub: &[&str]) -> String {
    let long: Vec<&str> = scrub.iter().copied().filter(|s| s.len() >= 2 * MIN_FRAGMENT).collect();
    if long.is_empty() {
        return text.to_owned();
    }
    let token_char = |c: char| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(token_char) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..].find(|c: char| !token_char(c)).unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        let core = word.trim_matches(|c| ".=".contains(c));
        if core.len() >= MIN_FRAGMENT && long.iter().any(|secret| secret.contains(core)) {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    out
}

/// A URL for messages: whatever precedes an `@` may be a password, so it is left out.
fn without_userinfo(url: &str) -> String {
    url.rsplit_once('@').map_or_else(|| url.to_owned(), |(_, host)| format!("<redacted>@{host}"))
}

/// A library message that may quote the input (a PEM line), cut to [`MAX_DETAIL_CHARS`].
fn bounded(message: &str) -> String {
    match message.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_owned(),
    }
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let delay = if let Ok(seconds) = value.trim().parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let date = jiff::fmt::rfc2822::parse(value.trim()).ok()?.timestamp();
        date.duration_since(now).try_into().unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn sanitize_scrubs_echoed_credentials_and_bounds_length() {
        let text = format!("bad secret s3cr3t-value\n{}", "x".repeat(1000));
        let clean = sanitize(&text, &["s3cr3t-value"]);
        assert!(!clean.contains("s3cr3t-value"));
        assert!(clean.starts_with("bad secret <redacted>"));
        assert!(clean.chars().count() <= MAX_DETAIL_CHARS);
    }

    #[test]
    fn sanitize_scrubs_quoted_pieces_of_long_tokens_and_keeps_ordinary_words() {
        let token = "Zq8sLk2PvN4xWc7Rt1YmHa5JdE3uGf9B";
        let text = format!("invalid_grant: Invalid refresh token: {}... (token {}), see requestId abc-123", &token[..12], &token[20..]);
        let clean = sanitize(&text, &[token]);
        assert_eq!(clean, "invalid_grant: Invalid refresh token: <redacted> (token <redacted>), see requestId abc-123");
        // Short secrets scrub only whole: a short word of the message is no piece of them.
        assert_eq!(sanitize("bad client secret", &["secret-1"]), "bad client secret");
    }
}
