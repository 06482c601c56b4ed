//! Reading (not verifying) the claims of a JWT access token: its `exp` and a few harmless claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Claims safe to show an admin (never the token itself).
pub const DISPLAYABLE_CLAIMS: &[&str] = &["iss", "sub", "aud", "azp", "context_name", "cid", "acct", "scope", "iat", "exp", "jti"];

/// The decoded payload of a JWT, or None when the string is not a JWT.
pub fn claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    parts.next()?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The `exp` claim (seconds since the epoch), when present and numeric.
pub fn expiry(token: &str) -> Option<i64> {
    let exp = claims(token)?.get("exp")?.clone();
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn reads_exp_from_a_jwt() {
        assert_eq!(expiry(&jwt(r#"{"exp":1800000000,"sub":"x"}"#)), Some(1_800_000_000));
        assert_eq!(expiry(&jwt(r#"{"exp":1800000000.5}"#)), Some(1_800_000_000));
    }

    #[test]
    fn not_a_jwt_has_no_expiry() {
        assert_eq!(expiry("opaque-token"), None);
        assert_eq!(expiry("a.b"), None);
        assert_eq!(expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(expiry(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(expiry(&jwt("[1,2]")), None);
    }
}
