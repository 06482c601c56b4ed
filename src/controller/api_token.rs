//! The CSP API token's own expiry (six months by default, or never). CSP is asked once per
//! change of the credentials and then at most daily, after an access token was stored (so a
//! failing answer never stands in the way of one). The answer is kept in `status.credentials`,
//! becomes the `CredentialsExpiring` condition, the metric
//! `navigator_token_api_token_expiry_timestamp_seconds` (from status) and, once, a Warning Event.

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::act::Actor;
use super::events::EventType;
use super::reconcile::Credentials;
use super::status::{self, rfc3339};
use crate::crd::{CredentialsStatus, NavigatorTokenStatus};
use crate::token::{ApiTokenExpiry, Grant};

/// Condition: the API token itself expires soon.
pub const CREDENTIALS_EXPIRING: &str = "CredentialsExpiring";
/// Reason (and Warning Event) of `CredentialsExpiring=True`.
pub const REASON_API_TOKEN_EXPIRING: &str = "APITokenExpiringSoon";
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
        return Some((false, "APITokenNeverExpires", format!("the CSP API token in Secret {secret} never expires")));
    }
    let expires_at: Timestamp = credentials.api_token_expires_at.as_deref()?.parse().ok()?;
    let at = rfc3339(expires_at);
    Some(if expires_at.duration_since(now) <= EXPIRY_WARNING {
        let message = format!(
            "the CSP API token in Secret {secret} expires at {at}; after that no access token can be issued. Generate a new API token in the CSP console and put it into the Secret before then"
        );
        (true, REASON_API_TOKEN_EXPIRING, message)
    } else {
        (false, "APITokenValid", format!("the CSP API token in Secret {secret} expires at {at}"))
    })
}

impl Actor<'_> {
    /// Asks CSP about the API token in `credentials` when it is due; the answer goes into the
    /// status written next. A failure is logged and changes nothing else.
    pub(super) async fn check_api_token(&mut self, credentials: &Credentials) {
        let Grant::ApiToken(api_token) = &credentials.grant else { return };
        let previous = self.previous.and_then(|p| p.credentials.as_deref());
        if !needs_check(previous, &credentials.fingerprint, self.now) {
            return;
        }
        let spec = &self.token.spec;
        let answer = self.ctx.tokens.api_token_details(&spec.endpoint_url(), spec.ca_bundle(), api_token).await;
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
        checked.api_token_checked_at = Some(rfc3339(self.now));
        checked.checked_fingerprint = Some(credentials.fingerprint.clone());
        self.credentials_checked = Some(Box::new(checked));
    }

    /// Puts the credentials' state and the `CredentialsExpiring` condition into `status`: the
    /// latest check, else what status had. Only for API tokens.
    pub(super) fn keep_credentials_status(&self, status: &mut NavigatorTokenStatus) {
        status.conditions.retain(|c| c.type_ != CREDENTIALS_EXPIRING);
        status.credentials = None;
        if self.token.spec.credentials_secret_ref.api_token_key.is_none() {
            return;
        }
        let credentials = self.credentials_checked.clone().or_else(|| self.previous.and_then(|p| p.credentials.clone()));
        let secret = &self.token.spec.credentials_secret_ref.name;
        if let Some((expiring, reason, message)) = credentials.as_deref().and_then(|c| expiry_condition(c, secret, self.now)) {
            let generation = self.token.metadata.generation;
            status::set_condition(status, self.previous, CREDENTIALS_EXPIRING, expiring, reason, message, generation, self.now);
        }
        status.credentials = credentials;
    }

    /// One Warning Event when `CredentialsExpiring` turns True.
    pub(super) async fn warn_once_when_expiring(&self, status: &NavigatorTokenStatus) {
        let expiring =
            |s: &NavigatorTokenStatus| s.conditions.iter().find(|c| c.type_ == CREDENTIALS_EXPIRING && c.status == "True").cloned();
        if let Some(condition) = expiring(status)
            && self.previous.and_then(expiring).is_none()
        {
            self.event(EventType::Warning, REASON_API_TOKEN_EXPIRING, &condition.message).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((expiring, reason), (true, REASON_API_TOKEN_EXPIRING));
        assert!(message.contains("Secret creds") && message.contains("before then"), "{message}");
        let never = checked(None, "2026-11-29T10:00:00Z", "fp");
        assert_eq!(expiry_condition(&never, "creds", at("2126-01-01T00:00:00Z")).map(|c| c.0), Some(false));
        assert_eq!(expiry_condition(&CredentialsStatus::default(), "creds", at("2026-12-01T00:00:00Z")), None, "unknown: no condition");
    }
}
