//! The upstream side: requesting access tokens from Cloud Partner Navigator or CSP.
//! Knows nothing about Kubernetes.

pub(crate) mod client;
mod details;
pub mod jwt;
pub mod proxy;

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

pub use crate::crd::EndpointType;
use crate::reasons;
use crate::redact::Sensitive;
pub use client::{API_TOKEN_AUTHORIZE_PATH, ClientOptions, TokenClient};
pub use details::{API_TOKEN_DETAILS_PATH, parse_api_token_expiry};
pub use proxy::EgressProxy;

/// Everything needed for one token request.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Which API to speak.
    pub endpoint_type: EndpointType,
    /// Base URL, no trailing slash.
    pub base_url: String,
    /// Organization GUID (sent with client credentials only: the other grants carry their org).
    pub org_id: String,
    /// What the token is requested with.
    pub grant: Grant,
    /// CSP scopes.
    pub scope: Option<String>,
    /// Requested lifetime.
    pub validity: Option<Duration>,
    /// Extra PEM roots.
    pub ca_bundle: Option<String>,
}

/// The credentials a token is requested with, one variant per kind a NavigatorToken can name.
#[derive(Clone, Debug, PartialEq)]
pub enum Grant {
    /// OAuth client credentials (`grant_type=client_credentials`, or Navigator's authorize).
    ClientCredentials {
        /// OAuth client id (not secret, but kept out of logs anyway by callers).
        client_id: String,
        /// OAuth client secret; empty for a public client.
        client_secret: Sensitive,
    },
    /// A CSP API token, exchanged at `api-tokens/authorize` without client authentication.
    ApiToken(Sensitive),
    /// A refresh token with the OAuth client that holds it (`grant_type=refresh_token`).
    RefreshToken {
        /// OAuth client id.
        client_id: String,
        /// OAuth client secret; empty for a public client.
        client_secret: Sensitive,
        /// The refresh token.
        refresh_token: Sensitive,
    },
}

impl Grant {
    /// The secret values of this grant, to scrub from anything the endpoint echoes.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Grant::ClientCredentials { client_secret, .. } => vec![client_secret.expose()],
            Grant::ApiToken(token) => vec![token.expose()],
            Grant::RefreshToken { client_secret, refresh_token, .. } => vec![client_secret.expose(), refresh_token.expose()],
        }
    }

    /// The OAuth client, for the grants that authenticate one.
    pub fn client(&self) -> Option<(&str, &Sensitive)> {
        match self {
            Grant::ClientCredentials { client_id, client_secret } | Grant::RefreshToken { client_id, client_secret, .. } => {
                Some((client_id, client_secret))
            }
            Grant::ApiToken(_) => None,
        }
    }
}

/// A token as issued, with its lifetime resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuedToken {
    /// The access token.
    pub access_token: Sensitive,
    /// The id token, when the endpoint returned one.
    pub id_token: Option<Sensitive>,
    /// When the request was sent (the conservative start of the lifetime).
    pub issued_at: Timestamp,
    /// When the token stops working.
    pub expires_at: Timestamp,
    /// Where `expires_at` came from.
    pub expiry_source: ExpirySource,
    /// A new refresh token, when a refresh-token grant returned one (the old one may be spent).
    pub refresh_token: Option<Sensitive>,
}

/// What CSP's `api-tokens/details` says about an API token's own lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiTokenExpiry {
    /// It expires at this time.
    At(Timestamp),
    /// It was created never to expire.
    Never,
}

/// How the expiry of a token was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpirySource {
    /// The OAuth `expires_in` field (CSP).
    ExpiresIn,
    /// The `exp` claim of the JWT access token.
    JwtExp,
    /// The lifetime that was requested (spec.validity).
    RequestedValidity,
}

/// What an upstream error body told us (CSP `cspErrorCode`/`message`/`requestId`, or a `message`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamDetail {
    /// CSP's error code.
    pub csp_error_code: Option<String>,
    /// Human-readable message (sanitised and truncated).
    pub message: Option<String>,
    /// Request id to quote to VMware support.
    pub request_id: Option<String>,
}

impl fmt::Display for UpstreamDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        let extras: Vec<String> = [("cspErrorCode", &self.csp_error_code), ("requestId", &self.request_id)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
            .collect();
        if !extras.is_empty() {
            write!(f, " ({})", extras.join(", "))?;
        }
        Ok(())
    }
}

/// Why a token request failed. Messages are safe to show: they never contain credentials or tokens.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TokenError {
    /// The endpoint host is not on the operator's allow-list.
    #[error(
        "endpoint host {host:?} is not allowed by this operator (allowed: {allowed}); a cluster admin can add it with --allowed-endpoint-hosts"
    )]
    EndpointNotAllowed {
        /// The host the spec names.
        host: String,
        /// The allow-list.
        allowed: String,
    },
    /// The endpoint URL or CA bundle cannot be used.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// HTTP 401: wrong client id or secret.
    #[error("the token endpoint rejected the client credentials (HTTP 401){0}; check the credentials Secret")]
    Unauthorized(UpstreamDetail),
    /// HTTP 403.
    #[error("the OAuth client is not allowed to get a token for this organization (HTTP 403){0}")]
    Forbidden(UpstreamDetail),
    /// HTTP 404 (CSP: organization not found).
    #[error("organization or endpoint not found (HTTP 404){0}; check orgId and endpoint.url")]
    NotFound(UpstreamDetail),
    /// HTTP 400: the request or the credentials are invalid.
    #[error("the token endpoint rejected the request (HTTP 400){0}; check orgId, scope and the credentials")]
    BadRequest(UpstreamDetail),
    /// HTTP 429.
    #[error("rate limited by the token endpoint (HTTP 429){detail}{}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The server's Retry-After, when given.
        retry_after: Option<Duration>,
        /// Error body details.
        detail: UpstreamDetail,
    },
    /// HTTP 5xx.
    #[error("the token endpoint is failing (HTTP {status}){detail}")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// Error body details.
        detail: UpstreamDetail,
    },
    /// Any other non-success status.
    #[error("unexpected HTTP {status} from the token endpoint{detail}")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// Error body details.
        detail: UpstreamDetail,
    },
    /// A redirect, which is never followed: it would carry the credentials elsewhere.
    #[error(
        "the token endpoint redirected (HTTP {status}) to {location:?}; redirects are not followed because they would send the client credentials elsewhere"
    )]
    Redirected {
        /// The HTTP status.
        status: u16,
        /// The Location header.
        location: String,
    },
    /// No complete answer in time; with where it was sent (see [`TokenError::Connect`]).
    #[error("no answer from the token endpoint {at} within {seconds}s", at = .1, seconds = .0.as_secs_f32())]
    Timeout(Duration, String),
    /// TCP connection failed: where to (`host:port`, and whether through a proxy), and why.
    #[error(
        "cannot connect to the token endpoint {0}: {1}; check that this host resolves and is reachable from the operator (DNS, egress NetworkPolicy), and whether the cluster reaches the internet only through a proxy (HTTPS_PROXY or --proxy)"
    )]
    Connect(String, String),
    /// The egress proxy refused, failed or did not answer; the endpoint was not reached.
    #[error(
        "cannot reach the token endpoint through the egress proxy {proxy}: {cause}; check the proxy (--proxy or HTTPS_PROXY), or exempt the endpoint's host with NO_PROXY"
    )]
    Proxy {
        /// The proxy, without its credentials.
        proxy: String,
        /// What failed.
        cause: String,
    },
    /// TLS failed, typically an untrusted certificate.
    #[error("TLS with the token endpoint {0} failed: {1}; if it uses a private CA, put it in endpoint.caBundle")]
    Tls(String, String),
    /// The connection broke mid-way.
    #[error("the connection to the token endpoint {0} failed: {1}")]
    Transport(String, String),
    /// The body exceeded the cap.
    #[error("the token endpoint's response is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The body is not the JSON we expect.
    #[error("the token endpoint's response is not valid token JSON ({0})")]
    MalformedResponse(String),
    /// The JSON lacks the access token.
    #[error("the token endpoint's response has no {0}")]
    MissingToken(&'static str),
    /// The token is already expired (or about to).
    #[error("the token endpoint issued a token that expires at {0}, which is not in the future")]
    AlreadyExpired(Timestamp),
    /// The token claims to live implausibly long.
    #[error("the token endpoint issued a token that expires at {0}, implausibly far in the future")]
    ImplausibleExpiry(Timestamp),
    /// The CSP API token is invalid, revoked or expired (400 invalid_grant, 401 or 403).
    #[error(
        "CSP rejected the API token (HTTP {status}){detail}: it is invalid, revoked or expired. Put a valid API token into the credentials Secret; it is not retried until the credentials change"
    )]
    ApiTokenInvalid {
        /// The HTTP status.
        status: u16,
        /// Error body details.
        detail: UpstreamDetail,
    },
    /// The refresh token is invalid, expired or already used (400 invalid_grant).
    #[error(
        "CSP rejected the refresh token (HTTP {status}){detail}: it is invalid, expired or already spent. Put a new refresh token into the credentials Secret; it is not retried until the credentials change"
    )]
    RefreshTokenInvalid {
        /// The HTTP status.
        status: u16,
        /// Error body details.
        detail: UpstreamDetail,
    },
    /// The grant does not exist at this endpoint (API and refresh tokens are CSP's).
    #[error("{0} work only with endpoint.type CSP")]
    UnsupportedGrant(&'static str),
    /// Nothing tells when the token expires.
    #[error("the token's expiry cannot be known (no expires_in, no JWT exp claim); set spec.validity")]
    UnknownExpiry,
}

/// How a failure should be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Likely to pass by itself: exponential backoff with jitter.
    Transient,
    /// Needs someone to fix the spec, credentials or endpoint: slow retry, immediate on change.
    NeedsUserAction,
    /// The server asked us to slow down.
    RateLimited(Option<Duration>),
    /// The credentials themselves were rejected (an API or refresh token): retrying the same
    /// values cannot help, so only a change of the credentials (or the spec) retries.
    UntilCredentialsChange,
}

impl TokenError {
    /// How to retry after this error.
    pub fn retry_class(&self) -> RetryClass {
        use TokenError::*;
        match self {
            EndpointNotAllowed { .. }
            | InvalidEndpoint(_)
            | Unauthorized(_)
            | Forbidden(_)
            | NotFound(_)
            | BadRequest(_)
            | Redirected { .. }
            | Tls(..)
            | UnsupportedGrant(_)
            | UnknownExpiry => RetryClass::NeedsUserAction,
            ApiTokenInvalid { .. } | RefreshTokenInvalid { .. } => RetryClass::UntilCredentialsChange,
            RateLimited { retry_after, .. } => RetryClass::RateLimited(*retry_after),
            Unavailable { .. }
            | UnexpectedStatus { .. }
            | Timeout(..)
            | Proxy { .. }
            | Connect(..)
            | Transport(..)
            | ResponseTooLarge { .. }
            | MalformedResponse(_)
            | MissingToken(_)
            | AlreadyExpired(_)
            | ImplausibleExpiry(_) => RetryClass::Transient,
        }
    }

    /// The message for the `token` command, which has no NavigatorToken: where [`Display`](fmt::Display)
    /// points at the credentials Secret or a spec field, this names the command's flags instead.
    pub fn command_line_message(&self) -> String {
        use TokenError::*;
        match self {
            Unauthorized(detail) => format!(
                "the token endpoint rejected the client credentials (HTTP 401){detail}; check the client id (--client-id) and secret (NAVIGATOR_CLIENT_SECRET or --client-secret) given"
            ),
            NotFound(detail) => format!("organization or endpoint not found (HTTP 404){detail}; check --org-id and --url"),
            BadRequest(detail) => format!(
                "the token endpoint rejected the request (HTTP 400){detail}; check --org-id, --scope and the client id and secret given"
            ),
            Tls(at, cause) => {
                format!("TLS with the token endpoint {at} failed: {cause}; if it uses a private CA, pass it with --ca-bundle")
            }
            UnknownExpiry => "the token's expiry cannot be known (no expires_in, no JWT exp claim); pass --validity".to_owned(),
            ApiTokenInvalid { status, detail } => {
                format!("CSP rejected the API token (HTTP {status}){detail}: it is invalid, revoked or expired; check NAVIGATOR_API_TOKEN")
            }
            other => other.to_string(),
        }
    }

    /// The status condition / Event reason for this error, and its `outcome` metric label.
    pub fn reason(&self) -> &'static str {
        use TokenError::*;
        match self {
            EndpointNotAllowed { .. } => reasons::ENDPOINT_NOT_ALLOWED,
            InvalidEndpoint(_) => reasons::INVALID_ENDPOINT,
            Unauthorized(_) => reasons::UNAUTHORIZED,
            Forbidden(_) => reasons::FORBIDDEN,
            NotFound(_) => reasons::NOT_FOUND,
            BadRequest(_) => reasons::BAD_REQUEST,
            RateLimited { .. } => reasons::RATE_LIMITED,
            Unavailable { .. } => reasons::UPSTREAM_UNAVAILABLE,
            UnexpectedStatus { .. } => reasons::UNEXPECTED_STATUS,
            Redirected { .. } => reasons::REDIRECTED,
            Timeout(..) => reasons::TIMEOUT,
            Connect(..) => reasons::CONNECTION_FAILED,
            Proxy { .. } => reasons::PROXY_ERROR,
            Tls(..) => reasons::TLS_ERROR,
            Transport(..) => reasons::TRANSPORT_ERROR,
            ResponseTooLarge { .. } => reasons::RESPONSE_TOO_LARGE,
            MalformedResponse(_) => reasons::MALFORMED_RESPONSE,
            MissingToken(_) => reasons::MISSING_TOKEN,
            AlreadyExpired(_) => reasons::TOKEN_ALREADY_EXPIRED,
            ImplausibleExpiry(_) => reasons::IMPLAUSIBLE_EXPIRY,
            UnknownExpiry => reasons::UNKNOWN_EXPIRY,
            ApiTokenInvalid { .. } => reasons::API_TOKEN_INVALID,
            RefreshTokenInvalid { .. } => reasons::REFRESH_TOKEN_INVALID,
            UnsupportedGrant(_) => reasons::INVALID_SPEC,
        }
    }
}
