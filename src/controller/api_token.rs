//! The CSP API token's own expiry (six months by default, or never). CSP is asked once per
//! change of the credentials and then at most daily, after an access token was stored (so a
//! failing answer never stands in the way of one). The answer is kept in `status.credentials`,
//! becomes the `CredentialsExpiring` condition, the metric
//! `navigator_token_api_token_expiry_timestamp_seconds` (from status) and, once, a Warning Event.
//! The same functions serve both kinds' act layers; a ClusterNavigatorToken asks once for all
//! its namespaces.

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::context::Context;
use super::observe::Credentials;
use super::status::{self, rfc3339};
use crate::crd::{CredentialsStatus, NavigatorTokenStatus, TokenSettings};
use crate::reasons::{API_TOKEN_EXPIRING_SOON, API_TOKEN_NEVER_EXPIRES, API_TOKEN_VALID, CREDENTIALS_EXPIRING};
use crate::token::{ApiTokenExpiry, Grant};

/// Warn this long before the API token expires: time enough for a person to rotate it.
pub const EXPIRY_WARNING: SignedDuration = SignedDuration::from_hours(24 * 30);
/// Ask CSP again after this long: an API token's expiry does not change, but it is cheap to
/// confirm, and a failed call is retried then.
pub const CHECK_INTERVAL: SignedDuration = SignedDuration::from_hours(24);

/// True when CSP should be asked: never asked, other credentials since, or a day has passed.
pub fn needs_check(previous: Option<&CredentialsStatus>, credentials_fp: &str, now: Timestamp) -> bool {
    let Some(previous) = previous.filter(|p| p.checked_fingerprint.as_deref() == Some(credentials_fp)) else { return true };
    let checked_at = previous.api_token_checked_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
    checked_at.is_none_or(|at| now.duration_since(at) >= CHECK_INTERVAL || at > now)
}

/// The `CredentialsExpiring` condition (status, reason, message), when the expiry is known.
pub fn expiry_condition(credentials: &CredentialsStatus, secret: &str, now: Timestamp) -> Option<(bool, &'static str, String)> {
    if credentials.api_token_never_expires {
        return Some((false, API_TOKEN_NEVER_EXPIRES, format!("the CSP API token in Secret {secret} never expires")));
    }
    let expires_at: Timestamp = credentials.api_token_expires_at.as_deref()?.parse().ok()?;
    let at = rfc3339(expires_at);
    Some(if expires_at.duration_since(now) <= EXPIRY_WARNING {
        let message = format!(
            "the CSP API token in Secret {secret} expires at {at}; after that no access token can be issued. Generate a new API token in the CSP console and put it into the Secret before then"
        );
        (true, API_TOKEN_EXPIRING_SOON, message)
    } else {
        (false, API_TOKEN_VALID, format!("the CSP API token in Secret {secret} expires at {at}"))
    })
}

/// Asks CSP about the API token in `credentials` when it is due: the credentials' new state for
/// status, or `None` (not an API token, or not due). `token` is a NavigatorToken or a
/// ClusterNavigatorToken's view; a failure is logged and keeps what was known.
pub(super) async fn check(
    ctx: &Context,
    settings: &TokenSettings,
    credentials: &Credentials,
    previous: Option<&NavigatorTokenStatus>,
    now: Timestamp,
) -> Option<Box<CredentialsStatus>> {
    let Grant::ApiToken(api_token) = &credentials.grant else { return None };
    let previous = previous.and_then(|p| p.credentials.as_deref());
    if !needs_check(previous, &credentials.fingerprint, now) {
        return None;
    }
    let answer = ctx.tokens.api_token_details(&settings.endpoint_url(), settings.ca_bundle(), api_token).await;
    // What is known of these credentials so far stays when CSP does not answer.
    let same = previous.filter(|p| p.checked_fingerprint.as_deref() == Some(credentials.fingerprint.as_str()));
    let mut checked = match answer {
        Ok(ApiTokenExpiry::At(at)) => {
            info!(expires_at = %at, "the API token's own expiry");
            CredentialsStatus { api_token_expires_at: Some(rfc3339(at)), ..CredentialsStatus::default() }
        }
        Ok(ApiTokenExpiry::Never) => CredentialsStatus { api_token_never_expires: true, ..CredentialsStatus::default() },
        Err(error) => {
            warn!(reason = error.reason(), %error, "could not learn the API token's expiry (api-tokens/details); access tokens are not affected");
            same.cloned().unwrap_or_default()
        }
    };
    checked.api_token_checked_at = Some(rfc3339(now));
    checked.checked_fingerprint = Some(credentials.fingerprint.clone());
    Some(Box::new(checked))
}

/// Puts the credentials' state and the `CredentialsExpiring` condition into `status`: `checked`
/// (this reconcile's answer), else what `previous` had. Only for API tokens; `secret` names the
/// credentials Secret in the condition's message.
pub(super) fn keep_credentials_status(
    status: &mut NavigatorTokenStatus,
    previous: Option<&NavigatorTokenStatus>,
    checked: Option<&CredentialsStatus>,
    (api_token, secret): (bool, &str),
    generation: Option<i64>,
    now: Timestamp,
) {
    status.conditions.retain(|c| c.type_ != CREDENTIALS_EXPIRING);
    status.credentials = None;
    if !api_token {
        return;
    }
    let credentials = checked.cloned().map(Box::new).or_else(|| previous.and_then(|p| p.credentials.clone()));
    if let Some((expiring, reason, message)) = credentials.as_deref().and_then(|c| expiry_condition(c, secret, now)) {
        status::set_condition(status, previous, CREDENTIALS_EXPIRING, expiring, reason, message, generation, now);
    }
    status.credentials = credentials;
}

/// The note of the one Warning Event [`API_TOKEN_EXPIRING_SOON`], when `CredentialsExpiring`
/// turned True from `previous` to `status`.
pub(super) fn expiring_warning(status: &NavigatorTokenStatus, previous: Option<&NavigatorTokenStatus>) -> Option<String> {
    let expiring = |s: &NavigatorTokenStatus| s.conditions.iter().find(|c| c.type_ == CREDENTIALS_EXPIRING && c.status == "True").cloned();
    let condition = expiring(status)?;
    previous.and_then(expiring).is_none().then_some(condition.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NavigatorToken;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn checked(expires_at: Option<&str>, checked_at: &str, fp: &str) -> CredentialsStatus {
        CredentialsStatus {
            api_token_expires_at: expires_at.map(str::to_owned),
            api_token_never_expires: expires_at.is_none(),
            api_token_checked_at: Some(checked_at.to_owned()),
            checked_fingerprint: Some(fp.to_owned()),
        }
    }

    #[test]
    fn csp_is_asked_once_per_credentials_change_and_then_daily() {
        let now = at("2026-11-29T10:00:00Z");
        assert!(needs_check(None, "fp-1", now));
        let recent = checked(Some("2027-05-29T10:00:00Z"), "2026-11-29T04:00:00Z", "fp-1");
        assert!(!needs_check(Some(&recent), "fp-1", now));
        assert!(needs_check(Some(&recent), "fp-2", now), "a rotated API token is asked about at once");
        assert!(needs_check(Some(&recent), "fp-1", at("2026-11-30T04:00:00Z")), "and again a day later");
    }

    #[test]
    fn the_condition_turns_true_within_thirty_days_of_the_api_tokens_expiry() {
        let c = checked(Some("2027-01-15T00:00:00Z"), "2026-11-29T10:00:00Z", "fp");
        let (expiring, reason, message) = expiry_condition(&c, "creds", at("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!((expiring, reason), (false, "APITokenValid"));
        assert!(message.contains("2027-01-15T00:00:00Z"), "{message}");
        let (expiring, reason, message) = expiry_condition(&c, "creds", at("2026-12-17T00:00:00Z")).unwrap();
        assert_eq!((expiring, reason), (true, API_TOKEN_EXPIRING_SOON));
        assert!(message.contains("Secret creds") && message.contains("before then"), "{message}");
        let never = checked(None, "2026-11-29T10:00:00Z", "fp");
        assert_eq!(expiry_condition(&never, "creds", at("2126-01-01T00:00:00Z")).map(|c| c.0), Some(false));
        assert_eq!(expiry_condition(&CredentialsStatus::default(), "creds", at("2026-12-01T00:00:00Z")), None, "unknown: no condition");
    }

    #[test]
    fn the_warning_is_due_only_when_the_condition_turns_true() {
        let c = checked(Some("2026-12-19T00:00:00Z"), "2026-11-29T10:00:00Z", "fp");
        let token: NavigatorToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "metadata": {"name": "t", "namespace": "a"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds", "apiTokenKey": "api_token"}},
        }))
        .unwrap();
        let now = at("2026-11-29T10:00:00Z");
        let mut first = NavigatorTokenStatus::default();
        let api_token = token.spec.credentials_secret_ref.api_token_key.is_some();
        keep_credentials_status(&mut first, None, Some(&c), (api_token, "ops/creds"), None, now);
        assert_eq!(first.credentials.as_deref(), Some(&c));
        let note = expiring_warning(&first, None).expect("turned True");
        assert!(note.contains("Secret ops/creds"), "{note}");
        // The next status keeps what the last check found, and warns no more.
        let mut next = NavigatorTokenStatus::default();
        keep_credentials_status(&mut next, Some(&first), None, (api_token, "ops/creds"), None, now);
        assert_eq!(next.credentials.as_deref(), Some(&c));
        assert_eq!(expiring_warning(&next, Some(&first)), None);
        // Credentials that are no API token have neither the state nor the condition.
        let mut plain = token.clone();
        plain.spec.credentials_secret_ref.api_token_key = None;
        let mut other = NavigatorTokenStatus::default();
        let plain_api_token = plain.spec.credentials_secret_ref.api_token_key.is_some();
        keep_credentials_status(&mut other, Some(&first), None, (plain_api_token, "ops/creds"), None, now);
        assert!(other.credentials.is_none() && other.conditions.is_empty(), "{other:?}");
    }
}
