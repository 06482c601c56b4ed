//! The target Secret: what it should contain, and what the one in the cache tells us.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::plan::{CurrentToken, TargetSecret};
use super::status::rfc3339;
use crate::crd::{DeletionPolicy, NavigatorToken};
use crate::redact::Sensitive;
use crate::{
    EXPIRES_AT_ANNOTATION, INPUTS_FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    REFRESH_REQUESTED_ANNOTATION, TOKEN_FINGERPRINT_ANNOTATION, TOKEN_NAME_ANNOTATION,
};

/// Annotation: fingerprint of the non-token parts of the Secret (labels, annotations, owner).
pub const TEMPLATE_FINGERPRINT_ANNOTATION: &str = "navigator.dev/template-sha256";

/// The token material written to a Secret.
#[derive(Clone, Debug)]
pub struct TokenMaterial {
    /// Access token.
    pub access_token: Sensitive,
    /// Id token, when issued.
    pub id_token: Option<Sensitive>,
    /// Issue and expiry time.
    pub times: TokenTimes,
}

/// Issue and expiry time of the token in a Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenTimes {
    /// Issue time.
    pub issued_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// Identity of the credentials Secret version a token was issued from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialsVersion {
    /// metadata.uid.
    pub uid: String,
    /// metadata.resourceVersion.
    pub resource_version: String,
}

/// Short hex SHA-256, for annotations: enough to notice a change, nothing to recover a value from.
pub fn fingerprint(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Fingerprint of everything a token depends on; a change means a new token.
pub fn inputs_fingerprint(token: &NavigatorToken, credentials: &CredentialsVersion) -> String {
    let spec = &token.spec;
    let target = spec.target();
    let inputs = json!({
        "orgId": spec.org_id,
        "endpointType": spec.endpoint_type(),
        "url": spec.endpoint_url(),
        "caBundle": spec.ca_bundle(),
        "scope": spec.scope,
        "validity": spec.validity,
        "credentialsSecretRef": spec.credentials_secret_ref,
        "credentials": [credentials.uid, credentials.resource_version],
        "secretName": token.target_secret_name(),
        "keys": [target.access_token_key(), target.id_token_key, target.expires_at_key],
        "refreshRequestedAt": token.annotations().get(REFRESH_REQUESTED_ANNOTATION),
    });
    fingerprint(inputs.to_string().as_bytes())
}

/// Fingerprint of the Secret's non-token parts; a change means a rewrite with the same token.
pub fn template_fingerprint(token: &NavigatorToken) -> String {
    let target = token.spec.target();
    let parts = json!({
        "labels": target.labels,
        "annotations": target.annotations,
        "retain": target.deletion_policy == Some(DeletionPolicy::Retain),
        "uid": token.metadata.uid,
    });
    fingerprint(parts.to_string().as_bytes())
}

/// The Secret as the operator wants it, for server-side apply.
pub fn desired(token: &NavigatorToken, material: &TokenMaterial, inputs_fp: &str) -> Secret {
    let target = token.spec.target();
    let mut labels = target.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations = target.annotations.clone();
    annotations.extend([
        (TOKEN_NAME_ANNOTATION.to_owned(), token.name_any()),
        (ISSUED_AT_ANNOTATION.to_owned(), rfc3339(material.times.issued_at)),
        (EXPIRES_AT_ANNOTATION.to_owned(), rfc3339(material.times.expires_at)),
        (TOKEN_FINGERPRINT_ANNOTATION.to_owned(), fingerprint(material.access_token.expose().as_bytes())),
        (INPUTS_FINGERPRINT_ANNOTATION.to_owned(), inputs_fp.to_owned()),
        (TEMPLATE_FINGERPRINT_ANNOTATION.to_owned(), template_fingerprint(token)),
    ]);
    let mut data = BTreeMap::new();
    data.insert(target.access_token_key().to_owned(), ByteString(material.access_token.expose().as_bytes().to_vec()));
    if let (Some(key), Some(id_token)) = (&target.id_token_key, &material.id_token) {
        data.insert(key.clone(), ByteString(id_token.expose().as_bytes().to_vec()));
    }
    if let Some(key) = &target.expires_at_key {
        data.insert(key.clone(), ByteString(rfc3339(material.times.expires_at).into_bytes()));
    }
    let owner_references = match target.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => token.controller_owner_ref(&()).map(|r| vec![r]),
        DeletionPolicy::Retain => None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(token.target_secret_name()),
            namespace: token.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// True when the Secret was written by this operator for this NavigatorToken.
pub fn is_ours(secret: &Secret, token: &NavigatorToken) -> bool {
    secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && secret.annotations().get(TOKEN_NAME_ANNOTATION) == token.metadata.name.as_ref()
}

/// Replaces each data value by its fingerprint, for the cache of managed Secrets: telling an
/// intact token from an edited one needs no more, and the cache then holds no token.
pub fn fingerprint_values(secret: &mut Secret) {
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        *value = ByteString(fingerprint(&value.0).into_bytes());
    }
}

/// Classifies a cached (fingerprinted, see [`fingerprint_values`]) Secret under the target name.
pub fn observe(secret: Option<&Secret>, token: &NavigatorToken, inputs_fp: &str) -> TargetSecret {
    let Some(secret) = secret else {
        return TargetSecret::Absent;
    };
    if !is_ours(secret, token) {
        return TargetSecret::Foreign;
    }
    let Some(TokenTimes { issued_at, expires_at }) = times(secret) else {
        return TargetSecret::Managed(None);
    };
    let annotations = secret.annotations();
    let target = token.spec.target();
    let stored = secret.data.as_ref().and_then(|data| data.get(target.access_token_key()));
    let intact = stored.is_some_and(|fp| has_token_fingerprint(secret, &fp.0));
    let owner_ok = match target.deletion_policy.unwrap_or_default() {
        DeletionPolicy::Delete => secret.owner_references().iter().any(|r| Some(&r.uid) == token.metadata.uid.as_ref()),
        DeletionPolicy::Retain => true,
    };
    TargetSecret::Managed(Some(CurrentToken {
        issued_at,
        expires_at,
        intact,
        inputs_current: annotations.get(INPUTS_FINGERPRINT_ANNOTATION).map(String::as_str) == Some(inputs_fp),
        template_current: owner_ok && annotations.get(TEMPLATE_FINGERPRINT_ANNOTATION) == Some(&template_fingerprint(token)),
    }))
}

/// Issue and expiry time from a managed Secret's annotations.
pub fn times(secret: &Secret) -> Option<TokenTimes> {
    let time = |key: &str| secret.annotations().get(key).and_then(|v| v.parse::<Timestamp>().ok());
    Some(TokenTimes { issued_at: time(ISSUED_AT_ANNOTATION)?, expires_at: time(EXPIRES_AT_ANNOTATION)? })
}

/// The token material in a managed Secret read from the API (not the cache), to rewrite it
/// without a new token.
pub fn material(secret: &Secret, token: &NavigatorToken) -> Option<TokenMaterial> {
    let target = token.spec.target();
    let times = times(secret)?;
    let access_token = data_text(secret, target.access_token_key())?;
    let intact = has_token_fingerprint(secret, fingerprint(access_token.expose().as_bytes()).as_bytes());
    intact.then(|| TokenMaterial { access_token, id_token: target.id_token_key.as_deref().and_then(|k| data_text(secret, k)), times })
}

/// True when `fp` is the token fingerprint the Secret's annotation records.
fn has_token_fingerprint(secret: &Secret, fp: &[u8]) -> bool {
    secret.annotations().get(TOKEN_FINGERPRINT_ANNOTATION).is_some_and(|recorded| recorded.as_bytes() == fp)
}

fn data_text(secret: &Secret, key: &str) -> Option<Sensitive> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    (!text.is_empty()).then(|| Sensitive::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> NavigatorToken {
        serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": "t", "namespace": "team-a", "uid": "u-1"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds"}},
        }))
        .unwrap()
    }

    fn intact(secret: &Secret, token: &NavigatorToken) -> bool {
        matches!(observe(Some(secret), token, "fp"), TargetSecret::Managed(Some(CurrentToken { intact: true, .. })))
    }

    #[test]
    fn the_cache_keeps_fingerprints_that_still_tell_an_edited_token() {
        let token = token();
        let issued_at: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let issued = TokenMaterial {
            access_token: Sensitive::new("eyJ.the-access-token.sig"),
            id_token: None,
            times: TokenTimes { issued_at, expires_at: issued_at + jiff::SignedDuration::from_mins(30) },
        };
        let written = desired(&token, &issued, "fp");
        assert_eq!(material(&written, &token).map(|m| m.times), Some(issued.times));

        let mut cached = written.clone();
        fingerprint_values(&mut cached);
        assert!(!serde_json::to_string(&cached).unwrap().contains("the-access-token"));
        assert!(intact(&cached, &token));
        assert_eq!(times(&cached), Some(issued.times));

        let mut edited = written;
        edited.data.as_mut().unwrap().insert("token".into(), ByteString(b"edited-by-hand".to_vec()));
        assert!(material(&edited, &token).is_none(), "an edited token is not rewritten as ours");
        fingerprint_values(&mut edited);
        assert!(!intact(&edited, &token));
    }
}
