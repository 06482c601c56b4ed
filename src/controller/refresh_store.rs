//! Where the newest refresh token of a refresh-token chain lives: a Secret of the operator's own
//! per NavigatorToken (`<name>-refresh-token`), never the user's credentials Secret, which the
//! operator only reads.
//!
//! CSP may answer a refresh-token grant with a new refresh token and spend the old one. The new
//! one is written here *before* the access token and status, and read back (one uncached GET per
//! issue) by whichever replica issues next, so restarts and new leaders continue the chain with
//! the newest token. It records a fingerprint of the seed (the refresh token in the user's
//! Secret): a user who pastes a new refresh token starts a new chain. When the write fails the
//! new token stays in memory and is written before anything else on the retry.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::Context;
use super::kube_io::SecretWriteFailure;
use super::reconcile::Blocked;
use super::secret::fingerprint;
use crate::crd::NavigatorToken;
use crate::redact::Sensitive;
use crate::{Error, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Annotation on the refresh-token Secret: the NavigatorToken whose chain it holds.
pub const REFRESH_TOKEN_FOR_ANNOTATION: &str = "navigator.dev/refresh-token-for";
/// Annotation on the refresh-token Secret: fingerprint of the seed the chain started from.
pub const SEED_FINGERPRINT_ANNOTATION: &str = "navigator.dev/seed-sha256";
/// Key of the refresh token in that Secret.
pub const REFRESH_TOKEN_KEY: &str = "refresh_token";
/// Longest Secret name.
const MAX_NAME: usize = 253;

/// The refresh-token Secret's name: `<name>-refresh-token` (see [`suffixed_name`]).
pub fn store_name(token_name: &str) -> String {
    suffixed_name(token_name, "-refresh-token")
}

/// `<name><suffix>`, shortened with a hash of the name when it would be longer than a Secret
/// name may be, so that long names stay distinct.
pub(crate) fn suffixed_name(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= MAX_NAME {
        return format!("{name}{suffix}");
    }
    let hash = &fingerprint(name.as_bytes())[..8];
    let keep = MAX_NAME - suffix.len() - hash.len() - 1;
    format!("{}-{hash}{suffix}", name[..keep].trim_end_matches(['-', '.']))
}

/// The refresh-token Secret holding `refresh_token`, for server-side apply. Always owned by the
/// NavigatorToken (whatever its target's deletionPolicy): it is the operator's state, useless
/// without it.
pub fn desired(token: &NavigatorToken, refresh_token: &Sensitive, seed_fp: &str) -> Secret {
    let name = token.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(store_name(&name)),
            namespace: token.namespace(),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into()),
            annotations: Some(
                [(REFRESH_TOKEN_FOR_ANNOTATION.to_owned(), name), (SEED_FINGERPRINT_ANNOTATION.to_owned(), seed_fp.to_owned())].into(),
            ),
            owner_references: token.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(REFRESH_TOKEN_KEY.to_owned(), ByteString(refresh_token.expose().as_bytes().to_vec()))].into()),
        ..Secret::default()
    }
}

/// What a Secret under the store's name holds for `token`'s chain from the seed `seed_fp`.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// The newest refresh token of this chain.
    Newest(Sensitive),
    /// Nothing usable: no Secret yet, or a chain from another seed (the user pasted a new one).
    Nothing,
    /// A Secret of that name the operator did not write for this NavigatorToken.
    Foreign,
}

/// Reads the store Secret (as fetched) for `token` and the seed fingerprint `seed_fp`.
pub fn read(secret: Option<&Secret>, token: &NavigatorToken, seed_fp: &str) -> Stored {
    let Some(secret) = secret else { return Stored::Nothing };
    let annotation = |key: &str| secret.annotations().get(key).map(String::as_str);
    let ours = secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        && annotation(REFRESH_TOKEN_FOR_ANNOTATION) == token.metadata.name.as_deref();
    if !ours {
        return Stored::Foreign;
    }
    let value = secret.data.as_ref().and_then(|d| d.get(REFRESH_TOKEN_KEY)).and_then(|v| std::str::from_utf8(&v.0).ok());
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) if annotation(SEED_FINGERPRINT_ANNOTATION) == Some(seed_fp) => Stored::Newest(Sensitive::new(value)),
        _ => Stored::Nothing,
    }
}

impl Context {
    /// The refresh token to send for `token`: one issued but not yet stored (memory), else the
    /// stored newest of this chain, else the `seed` from the credentials Secret.
    pub(super) async fn newest_refresh_token(&self, token: &NavigatorToken, seed: &Sensitive) -> Result<Sensitive, RefreshFailure> {
        let seed_fp = fingerprint(seed.expose().as_bytes());
        if let Some(pending) = self.pending_refresh_token(token, &seed_fp) {
            return Ok(pending);
        }
        let name = store_name(&token.name_any());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &token.namespace().unwrap_or_default());
        let stored = api.get_opt(&name).await.map_err(Error::kube("get refresh-token Secret")).map_err(RefreshFailure::Kube)?;
        match read(stored.as_ref(), token, &seed_fp) {
            Stored::Newest(newest) => Ok(newest),
            Stored::Nothing => Ok(seed.clone()),
            Stored::Foreign => Err(RefreshFailure::Blocked(Blocked {
                reason: "SecretConflict",
                message: format!(
                    "Secret {name} already exists and was not created by this operator to keep this NavigatorToken's refresh token; it is left untouched. Delete or rename it"
                ),
            })),
        }
    }

    /// Remembers a refresh token just issued for `token`'s chain from `seed`: until it is
    /// written ([`Context::store_pending_refresh_token`]), it is the newest.
    pub(super) fn remember_refresh_token(&self, token: &NavigatorToken, seed: &Sensitive, newest: Sensitive) {
        let seed_fp = fingerprint(seed.expose().as_bytes());
        self.per_token.pending_refresh.lock().unwrap_or_else(|p| p.into_inner()).insert(ObjectRef::from_obj(token), (seed_fp, newest));
    }

    /// Writes the refresh token waiting in memory for `token`, if any.
    pub(super) async fn store_pending_refresh_token(&self, token: &NavigatorToken) -> Result<(), SecretWriteFailure> {
        let key = ObjectRef::from_obj(token);
        let pending = self.per_token.pending_refresh.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let Some((seed_fp, newest)) = pending else { return Ok(()) };
        let desired = desired(token, &newest, &seed_fp);
        let (namespace, name) = (token.namespace().unwrap_or_default(), desired.name_any());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(error) = api.patch(&name, &params, &Patch::Apply(&desired)).await {
            let failure = SecretWriteFailure::classify(&error, &namespace, &name, &desired);
            warn!(reason = failure.reason, message = %failure.message, "writing the refresh-token Secret failed; the new refresh token stays in memory");
            return Err(failure);
        }
        info!(secret = name, "stored the rotated refresh token");
        let mut pending = self.per_token.pending_refresh.lock().unwrap_or_else(|p| p.into_inner());
        // Only if no newer one arrived meanwhile (reconciles of one object do not overlap, but be sure).
        if pending.get(&key).is_some_and(|(fp, value)| *fp == seed_fp && *value == newest) {
            pending.remove(&key);
        }
        Ok(())
    }

    fn pending_refresh_token(&self, token: &NavigatorToken, seed_fp: &str) -> Option<Sensitive> {
        let key = ObjectRef::from_obj(token);
        let mut pending = self.per_token.pending_refresh.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get(&key) {
            Some((fp, value)) if fp == seed_fp => Some(value.clone()),
            // A new seed in the credentials Secret starts a new chain: the old one is dropped.
            Some(_) => {
                pending.remove(&key);
                None
            }
            None => None,
        }
    }
}

/// Why the refresh token to send could not be found.
#[derive(Debug)]
pub(super) enum RefreshFailure {
    /// Reading the store failed.
    Kube(Error),
    /// The store's name is taken by someone else's Secret.
    Blocked(Blocked),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(name: &str) -> NavigatorToken {
        serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
            "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "creds", "refreshTokenKey": "refresh_token"}},
        }))
        .unwrap()
    }

    #[test]
    fn the_store_keeps_the_newest_token_of_the_chain_from_its_seed_only() {
        let token = token("partner-api");
        let seed_fp = fingerprint(b"seed-refresh-token");
        let written = desired(&token, &Sensitive::new("rotated-2"), &seed_fp);
        assert_eq!(written.name_any(), "partner-api-refresh-token");
        assert_eq!(written.owner_references()[0].uid, "u-1");
        assert_eq!(read(Some(&written), &token, &seed_fp), Stored::Newest(Sensitive::new("rotated-2")));
        assert_eq!(read(None, &token, &seed_fp), Stored::Nothing);
        // The user pasted a new refresh token: the stored chain is from the old seed.
        assert_eq!(read(Some(&written), &token, &fingerprint(b"a-new-seed")), Stored::Nothing);
        // Another NavigatorToken's chain, or a Secret the operator did not write.
        assert_eq!(read(Some(&written), &self::token("other"), &seed_fp), Stored::Foreign);
        let mut foreign = written.clone();
        foreign.labels_mut().clear();
        assert_eq!(read(Some(&foreign), &token, &seed_fp), Stored::Foreign);
        assert!(!format!("{:?}", read(Some(&written), &token, &seed_fp)).contains("rotated-2"), "Debug never shows it");
    }

    #[test]
    fn store_names_are_valid_for_the_longest_navigator_token_names() {
        let long = "a".repeat(253);
        let name = store_name(&long);
        assert!(name.len() <= 253 && name.ends_with("-refresh-token"), "{name}");
        assert_ne!(store_name(&long), store_name(&"a".repeat(252)), "shortened names stay distinct");
    }
}
