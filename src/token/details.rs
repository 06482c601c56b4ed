//! CSP's `api-tokens/details`: the API token's own expiry, so that a person can rotate it in
//! time. Informational only: a failing call never stands in the way of an access token.

use jiff::{SignedDuration, Timestamp};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use super::{ApiTokenExpiry, TokenClient, TokenError};
use crate::redact::Sensitive;

/// Path of CSP's API-token details call.
pub const API_TOKEN_DETAILS_PATH: &str = "/csp/gateway/am/api/auth/api-tokens/details";

/// No API token existed before this (2000-01-01T00:00:00Z), in epoch milliseconds: a smaller
/// `expiresAt` is seconds read as milliseconds, or garbage.
const EARLIEST_PLAUSIBLE_MS: i64 = 946_684_800_000;
/// Longest plausible remaining lifetime of an API token (CSP offers up to "never").
const LONGEST_PLAUSIBLE: SignedDuration = SignedDuration::from_hours(24 * 366 * 100);

impl TokenClient {
    /// Asks CSP when `api_token` expires: `POST {base_url}/csp/gateway/am/api/auth/api-tokens/details`
    /// with `{"tokenValue": …}` and no authentication (CSP answers for unexpired tokens only).
    pub async fn api_token_details(
        &self,
        base_url: &str,
        ca_bundle: Option<&str>,
        api_token: &Sensitive,
    ) -> Result<ApiTokenExpiry, TokenError> {
        let url = self.checked_endpoint(base_url, API_TOKEN_DETAILS_PATH, ca_bundle.is_some())?;
        let client = self.client_for(ca_bundle)?;
        self.wait_for_rate_limit().await;
        let body = serde_json::json!({"tokenValue": api_token.expose()}).to_string();
        let scrub = [api_token.expose()];
        let now = Timestamp::now();
        let answer = self.send(client.post(url).header(CONTENT_TYPE, "application/json").body(body), now, &scrub).await?;
        if !answer.status.is_success() {
            return Err(answer.error(&scrub));
        }
        parse_api_token_expiry(&answer.bytes, now)
    }
}

/// The `expiresAt` of a details answer: epoch milliseconds (as CSP's own tools read it); absent,
/// null or 0 means the token never expires. Values before 2000 (seconds mistaken for
/// milliseconds) or more than 100 years after `now` are rejected as implausible.
pub fn parse_api_token_expiry(body: &[u8], now: Timestamp) -> Result<ApiTokenExpiry, TokenError> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| TokenError::MalformedResponse(format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column())))?;
    let Some(object) = parsed.as_object() else {
        return Err(TokenError::MalformedResponse("api-tokens/details did not answer a JSON object".into()));
    };
    let millis = match object.get("expiresAt") {
        None | Some(Value::Null) => return Ok(ApiTokenExpiry::Never),
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    let implausible = || TokenError::MalformedResponse("api-tokens/details: expiresAt is not plausible epoch milliseconds".into());
    let millis = millis.ok_or_else(implausible)?;
    if millis == 0 {
        return Ok(ApiTokenExpiry::Never);
    }
    let at = Timestamp::from_millisecond(millis).map_err(|_| implausible())?;
    if millis < EARLIEST_PLAUSIBLE_MS || at.duration_since(now) > LONGEST_PLAUSIBLE {
        return Err(implausible());
    }
    Ok(ApiTokenExpiry::At(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ApiTokenExpiry, String> {
        parse_api_token_expiry(body.as_bytes(), "2026-11-29T10:00:00Z".parse().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn expires_at_is_epoch_milliseconds_and_absent_null_or_zero_never_expires() {
        let six_months: Timestamp = "2027-05-29T10:00:00Z".parse().unwrap();
        let ms = six_months.as_millisecond();
        assert_eq!(parse(&format!(r#"{{"tokenId":"t-1","expiresAt":{ms}}}"#)), Ok(ApiTokenExpiry::At(six_months)));
        assert_eq!(parse(&format!(r#"{{"expiresAt":"{ms}"}}"#)), Ok(ApiTokenExpiry::At(six_months)));
        assert_eq!(parse(&format!(r#"{{"expiresAt":{ms}.0}}"#)), Ok(ApiTokenExpiry::At(six_months)));
        for never in [r#"{"tokenId":"t-1"}"#, r#"{"expiresAt":null}"#, r#"{"expiresAt":0}"#] {
            assert_eq!(parse(never), Ok(ApiTokenExpiry::Never), "{never}");
        }
    }

    #[test]
    fn implausible_expiries_are_rejected() {
        let seconds = "2027-05-29T10:00:00Z".parse::<Timestamp>().unwrap().as_second();
        let too_far = "2200-01-01T00:00:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        for body in [
            format!(r#"{{"expiresAt":{seconds}}}"#),
            format!(r#"{{"expiresAt":{too_far}}}"#),
            r#"{"expiresAt":-5}"#.to_owned(),
            r#"{"expiresAt":"soon"}"#.to_owned(),
            r#"{"expiresAt":true}"#.to_owned(),
            r#"{"expiresAt":1.5e300}"#.to_owned(),
            "[]".to_owned(),
            "not json".to_owned(),
        ] {
            let error = parse(&body).expect_err(&body);
            assert!(
                error.contains("not plausible") || error.contains("not valid token JSON") || error.contains("JSON object"),
                "{body}: {error}"
            );
        }
    }
}
