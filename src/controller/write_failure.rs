//! Why a Secret write failed, in terms a person can act on: the reason for status and Events,
//! and the server's message with every value of the Secret taken out (pure).

use k8s_openapi::api::core::v1::Secret;

use crate::reasons::{
    INVALID_TEMPLATE, NAMESPACE_TERMINATING, SECRET_IMMUTABLE, SECRET_INVALID, SECRET_QUOTA_EXCEEDED, SECRET_WRITE_FAILED,
    SECRET_WRITE_FORBIDDEN,
};
use crate::template::TemplateError;
use crate::token::RetryClass;

/// Why the target Secret could not be written, in terms a person can act on.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SecretWriteFailure {
    /// The condition and Event reason.
    pub(super) reason: &'static str,
    /// What happened and what to do.
    pub(super) message: String,
}

/// The longest piece of an API server message quoted in status (admission webhooks can say a lot).
const MAX_QUOTED: usize = 400;

impl SecretWriteFailure {
    /// A template that does not render: nothing was sent, and only a spec change helps.
    pub(super) fn template(error: TemplateError) -> SecretWriteFailure {
        SecretWriteFailure { reason: INVALID_TEMPLATE, message: format!("{error}; the Secret is left as it is") }
    }

    /// How to retry: API refusals back off like upstream failures; a template waits for a fix.
    pub(super) fn retry_class(&self) -> RetryClass {
        if self.reason == INVALID_TEMPLATE { RetryClass::NeedsUserAction } else { RetryClass::Transient }
    }

    /// Classifies a failed write of Secret `name` in `namespace`, `sent` being what was sent
    /// (an empty Secret when nothing was). The server's message is quoted with every value of
    /// `sent` taken out, as text and in base64: an admission webhook may echo the object, and
    /// the API server receives a Secret's data base64-encoded, so an echo holds the base64 of
    /// each value (of `Bearer <token>` too, which does not contain the token's own base64).
    pub(super) fn classify(error: &kube::Error, namespace: &str, name: &str, sent: &Secret) -> SecretWriteFailure {
        let values: Vec<&[u8]> = sent
            .data
            .iter()
            .flatten()
            .map(|(_, value)| value.0.as_slice())
            .chain(sent.string_data.iter().flatten().map(|(_, value)| value.as_bytes()))
            .collect();
        let scrub = |text: &str| scrub(text, &values);
        let status = match error {
            kube::Error::Api(status) => status,
            other => {
                let message = format!("writing Secret {name} failed: {}", scrub(&other.to_string()));
                return SecretWriteFailure { reason: SECRET_WRITE_FAILED, message };
            }
        };
        let said = scrub(&status.message);
        let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
        let cause = |reason: &str, field: &str| causes.iter().any(|c| c.reason == reason || (!field.is_empty() && c.field == field));
        let (reason, message) = match status.code {
            // The API server's cause, which this operator's reason repeats.
            403 if cause("NamespaceTerminating", "") => {
                (NAMESPACE_TERMINATING, format!("namespace {namespace} is being deleted; Secret {name} cannot be written there"))
            }
            403 if status.message.contains("exceeded quota") => (
                SECRET_QUOTA_EXCEEDED,
                format!(
                    "a ResourceQuota in namespace {namespace} leaves no room for Secret {name} ({said}). Raise the quota or delete unused Secrets; the token already issued is stored then"
                ),
            ),
            403 => (
                SECRET_WRITE_FORBIDDEN,
                format!(
                    "writing Secret {name} was forbidden ({said}). Check the operator's RBAC and any admission webhook or policy on Secrets in namespace {namespace}"
                ),
            ),
            422 if causes.iter().any(|c| c.field == "data" && c.message.contains("immutable")) => (
                SECRET_IMMUTABLE,
                format!(
                    "Secret {name} is marked immutable and cannot take the new token. Delete it and the operator recreates it with the current token"
                ),
            ),
            422 if cause("", "type") => (
                SECRET_INVALID,
                format!(
                    "Secret {name} exists with another type and the type of a Secret cannot change ({said}). Delete it and the operator recreates it"
                ),
            ),
            400 | 422 => {
                (SECRET_INVALID, format!("the API server rejected Secret {name} ({said}). Fix spec.target (labels, annotations, keys)"))
            }
            _ => (SECRET_WRITE_FAILED, format!("writing Secret {name} failed ({said}); retrying with backoff")),
        };
        SecretWriteFailure { reason, message }
    }
}

/// Shortest value scrubbed: shorter ones (a rendered `true`) are no secret, and replacing them
/// would garble the message.
const MIN_SCRUBBED: usize = 8;

/// `text` with the `values` replaced, in every form an echo may hold them: as text, and in
/// standard and URL-safe base64, with and without padding; then words that are a piece of a
/// token-like form (a webhook that cuts what it quotes); then cut to [`MAX_QUOTED`] characters
/// (in that order, so that no cut-off piece of a value survives).
fn scrub(text: &str, values: &[&[u8]]) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let one_word = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~+/=".contains(c));
    let (mut forms, mut pieces) = (Vec::new(), Vec::new());
    for value in values.iter().filter(|v| v.len() >= MIN_SCRUBBED) {
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(value);
            pieces.push(encoded.clone());
            forms.push(encoded);
        }
        if let Ok(text) = std::str::from_utf8(value) {
            // A rendered value's words ("password", a registry's host) are no secret's pieces.
            if one_word(text) {
                pieces.push(text.to_owned());
            }
            forms.push(text.to_owned());
        }
    }
    // The longest first: `Bearer <token>` goes whole, not leaving `Bearer <redacted>`'s kin.
    forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    forms.dedup();
    let mut out = text.to_owned();
    for form in &forms {
        out = out.replace(form.as_str(), "<redacted>");
    }
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let out = crate::token::client::without_fragments(&out, &pieces);
    out.chars().take(MAX_QUOTED).collect()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;
    use crate::controller::secret::{TokenMaterial, TokenTimes};
    use crate::crd::NavigatorToken;
    use crate::redact::Sensitive;

    /// An API error with the code, message and causes a genuine kube-apiserver v1.28 answered.
    fn api_error(code: u16, reason: &str, message: &str, causes: serde_json::Value) -> kube::Error {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message, "details": {"name": "tok", "kind": "secrets", "causes": causes}});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    fn material() -> TokenMaterial {
        let t: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        TokenMaterial {
            access_token: Sensitive::new("eyJ.secret-access-token.sig"),
            id_token: None,
            times: TokenTimes { issued_at: t, expires_at: t },
        }
    }

    /// The Secret sent: the raw token, and a key rendered from a template.
    fn sent() -> Secret {
        let token: NavigatorToken = serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": "tok", "namespace": "team-a", "uid": "u-1"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"},
                     "target": {"template": {"data": {"authorization": "Bearer {{ accessToken }}"}}}},
        }))
        .unwrap();
        crate::controller::secret::desired(&token.spec.settings, &token.placement(), "team-a", &material(), "inputs").unwrap()
    }

    fn classify(error: &kube::Error) -> SecretWriteFailure {
        SecretWriteFailure::classify(error, "team-a", "tok", &sent())
    }

    #[test]
    fn each_recorded_refusal_gets_a_reason_a_person_can_act_on() {
        let quota = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: exceeded quota: secrets, requested: count/secrets=1, used: count/secrets=1, limited: count/secrets=1"#,
            json!([]),
        );
        let terminating = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: unable to create new content in namespace team-a because it is being terminated"#,
            json!([{"reason": "NamespaceTerminating", "message": "namespace team-a is being terminated", "field": "metadata.namespace"}]),
        );
        let rbac = api_error(
            403,
            "Forbidden",
            r#"secrets "tok" is forbidden: User "system:serviceaccount:ops:navigator-token-operator" cannot patch resource "secrets""#,
            json!([]),
        );
        let immutable = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: data: Forbidden: field is immutable when `immutable` is set"#,
            json!([{"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable when `immutable` is set", "field": "data"}]),
        );
        let type_change = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: type: Invalid value: "example.com/other": field is immutable"#,
            json!([{"reason": "FieldValueInvalid", "message": "Invalid value: \"example.com/other\": field is immutable", "field": "type"}]),
        );
        let label = api_error(
            422,
            "Invalid",
            r#"Secret "tok" is invalid: metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters"#,
            json!([{"reason": "FieldValueInvalid", "message": "Invalid value: \"bad key!\"", "field": "metadata.labels"}]),
        );
        let unavailable = api_error(503, "ServiceUnavailable", "etcdserver: leader changed", json!([]));
        let cases = [
            (&quota, "SecretQuotaExceeded", "Raise the quota"),
            (&terminating, "NamespaceTerminating", "being deleted"),
            (&rbac, "SecretWriteForbidden", "RBAC"),
            (&immutable, "SecretImmutable", "Delete it and the operator recreates it"),
            (&type_change, "SecretInvalid", "type of a Secret cannot change"),
            (&label, "SecretInvalid", "bad key!"),
            (&unavailable, "SecretWriteFailed", "etcdserver: leader changed"),
        ];
        for (error, reason, hint) in cases {
            let failure = classify(error);
            assert_eq!(failure.reason, reason, "{error}");
            assert!(failure.message.contains(hint), "{reason}: {}", failure.message);
            assert!(crate::reasons::SECRET_WRITE_FAILURES.contains(&failure.reason));
        }
    }

    #[test]
    fn a_refusal_that_echoes_the_token_is_quoted_without_it() {
        use base64::Engine;
        let token = material().access_token.expose().to_owned();
        let echoed = format!(
            "admission webhook \"policy.example.com\" denied the request: data.token {token} ({}) is not allowed",
            base64::engine::general_purpose::STANDARD.encode(&token)
        );
        let failure = classify(&api_error(403, "Forbidden", &echoed, json!([])));
        assert_eq!(failure.reason, "SecretWriteForbidden");
        assert!(!failure.message.contains("secret-access-token"), "{}", failure.message);
        assert!(!failure.message.contains(&base64::engine::general_purpose::STANDARD.encode(&token)[..20]), "{}", failure.message);
        assert!(failure.message.contains("policy.example.com"));
        let long = classify(&api_error(403, "Forbidden", &"x".repeat(10_000), json!([])));
        assert!(long.message.len() < 1_000, "quoted messages are bounded");
    }

    #[test]
    fn a_refusal_that_echoes_a_rendered_key_in_base64_is_quoted_without_it() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let rendered = sent().data.unwrap()["authorization"].0.clone();
        assert_eq!(rendered, b"Bearer eyJ.secret-access-token.sig");
        // The base64 of `Bearer <token>` holds no base64 of the token at a fixed offset.
        assert!(!STANDARD.encode(&rendered).contains(&STANDARD.encode(b"eyJ.secret-access-token.sig")[..12]));
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let echoed = engine.encode(&rendered);
            let message = format!(
                r#"admission webhook "policy.example.com" denied the request: data[authorization]: Invalid value: "{echoed}"; first bytes: {}..."#,
                &echoed[..24]
            );
            for code in [400, 422] {
                let failure = classify(&api_error(code, "Invalid", &message, json!([])));
                assert_eq!(failure.reason, "SecretInvalid");
                assert!(!failure.message.contains(&echoed[..16]), "{code}: {}", failure.message);
                assert!(failure.message.contains("policy.example.com") && failure.message.contains("data[authorization]"));
            }
        }
        // As text, too (a webhook that decodes what it quotes).
        let failure = classify(&api_error(422, "Invalid", "value \"Bearer eyJ.secret-access-token.sig\" is not allowed", json!([])));
        assert!(!failure.message.contains("secret-access-token"), "{}", failure.message);
    }
}
