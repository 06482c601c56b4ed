//! Where the newest refresh token of a refresh-token chain lives: a Secret of the operator's own
//! per NavigatorToken (`<name>-refresh-token`), never the user's credentials Secret, which the
//! operator only reads.
//!
//! CSP may answer a refresh-token grant with a new refresh token and spend the old one. The new
//! one is written here *before* the access token and status, and read back (one uncached GET per
//! issue) by whichever replica issues next, so restarts and new leaders continue the chain with
//! the newest token. It records a fingerprint of the seed (the refresh token in the user's
//! Secret): a user who pastes a new refresh token starts a new chain. When the write fails it is
//! tried again a few times within the reconcile, then the new token stays in memory
//! ([`PendingRefreshTokens`]) and is written before anything else on the retry, and flushed when
//! the process stops (gracefully, or within the lease time left after the Lease is lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::observe::Blocked;
use super::secret::{carries_managed_label, fingerprint};
use super::write_failure::SecretWriteFailure;
use crate::crd::NavigatorToken;
use crate::reasons::{SECRET_CONFLICT, SECRET_WRITE_FAILED};
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

/// The refresh-token Secret of NavigatorToken `name` in `namespace` holding `refresh_token`,
/// for server-side apply. Deliberately without an owner reference: a NavigatorToken deleted and
/// created again (a GitOps "replace") must find the chain, since the seed in the user's Secret
/// is spent. It is found by name and the annotations, and an orphaned one is deleted after a
/// grace period (see `orphans`).
pub fn desired(namespace: &str, name: &str, refresh_token: &Sensitive, seed_fp: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(store_name(name)),
            namespace: Some(namespace.to_owned()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into()),
            annotations: Some(
                [(REFRESH_TOKEN_FOR_ANNOTATION.to_owned(), name.to_owned()), (SEED_FINGERPRINT_ANNOTATION.to_owned(), seed_fp.to_owned())]
                    .into(),
            ),
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
    let ours = carries_managed_label(secret) && annotation(REFRESH_TOKEN_FOR_ANNOTATION) == token.metadata.name.as_deref();
    if !ours {
        return Stored::Foreign;
    }
    let value = secret.data.as_ref().and_then(|d| d.get(REFRESH_TOKEN_KEY)).and_then(|v| std::str::from_utf8(&v.0).ok());
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) if annotation(SEED_FINGERPRINT_ANNOTATION) == Some(seed_fp) => Stored::Newest(Sensitive::new(value)),
        _ => Stored::Nothing,
    }
}

/// Rotated refresh tokens not yet in their Secret: the newest of their chain, and the only copy
/// until written. Shared by every controller of the process and by `main`, which flushes them
/// when the controllers stop, gracefully or because the Lease was lost.
pub struct PendingRefreshTokens {
    client: Client,
    entries: Mutex<HashMap<ObjectRef<NavigatorToken>, Pending>>,
}

/// One rotated refresh token waiting to be written, with the fingerprint of its chain's seed.
#[derive(Clone, PartialEq)]
struct Pending {
    seed_fp: String,
    token: Sensitive,
}

/// How a write is retried: at most `tries` (all until `deadline` when `None`), pausing
/// `first_pause` and doubling up to `max_pause`; no try is outstanding after `deadline`.
struct Retry {
    tries: Option<u32>,
    first_pause: Duration,
    max_pause: Duration,
    deadline: Instant,
}

/// Tries of the store write inside a reconcile, before the token waits for the reconcile's own
/// retry: 3 within about 10 s (pauses of 2 and 4 s) ride out a short API-server outage.
const RECONCILE_TRIES: u32 = 3;
/// Bound on those tries together (a hung request included).
const RECONCILE_BUDGET: Duration = Duration::from_secs(15);
/// Writes of a flush at once.
const FLUSH_CONCURRENCY: usize = 16;

impl PendingRefreshTokens {
    /// An empty set whose writes go through `client`.
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(PendingRefreshTokens { client, entries: Mutex::default() })
    }

    /// How many wait to be written.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every pending refresh token, retrying each until `deadline` (and never sending
    /// after it); returns how many are still unwritten. For a stop: after a graceful one, and
    /// after a lost Lease within the lease time that remains.
    pub async fn flush(&self, deadline: Instant) -> usize {
        let keys: Vec<_> = self.lock().keys().cloned().collect();
        if keys.is_empty() {
            return 0;
        }
        info!(pending = keys.len(), "writing the rotated refresh tokens not yet stored");
        let retry = |deadline| Retry { tries: None, first_pause: Duration::from_millis(200), max_pause: Duration::from_secs(1), deadline };
        futures::stream::iter(keys)
            .for_each_concurrent(FLUSH_CONCURRENCY, |key| async move {
                let _ = self.write(&key, &retry(deadline)).await;
            })
            .await;
        let left = self.len();
        if left > 0 {
            error!(
                unwritten = left,
                "rotated refresh tokens could not be stored before stopping: those chains need a new refresh token (RefreshTokenInvalid)"
            );
        }
        left
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<NavigatorToken>, Pending>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, key: ObjectRef<NavigatorToken>, seed_fp: String, token: Sensitive) {
        self.lock().insert(key, Pending { seed_fp, token });
    }

    /// The pending token of `key`'s chain from `seed_fp`; one of another chain is dropped.
    fn newest(&self, key: &ObjectRef<NavigatorToken>, seed_fp: &str) -> Option<Sensitive> {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(pending) if pending.seed_fp == seed_fp => Some(pending.token.clone()),
            // A new seed in the credentials Secret starts a new chain: the old one is dropped.
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Writes `key`'s pending token, if any, as `retry` says; on failure the last error (`None`
    /// when the deadline cut a try short) and what was sent.
    async fn write(&self, key: &ObjectRef<NavigatorToken>, retry: &Retry) -> Result<(), (Option<kube::Error>, Secret)> {
        let Some(pending) = self.lock().get(key).cloned() else { return Ok(()) };
        let namespace = key.namespace.clone().unwrap_or_default();
        let desired = desired(&namespace, &key.name, &pending.token, &pending.seed_fp);
        let name = desired.name_any();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let (mut pause, mut tried) = (retry.first_pause, 0);
        let error = loop {
            tried += 1;
            let error = match tokio::time::timeout_at(retry.deadline, api.patch(&name, &params, &Patch::Apply(&desired))).await {
                Ok(Ok(_)) => {
                    info!(secret = name, namespace, "stored the rotated refresh token");
                    let mut entries = self.lock();
                    // Only if no newer one arrived meanwhile.
                    if entries.get(key) == Some(&pending) {
                        entries.remove(key);
                    }
                    return Ok(());
                }
                Ok(Err(error)) => Some(error),
                Err(_) => None,
            };
            let out_of_tries = retry.tries.is_some_and(|tries| tried >= tries);
            if error.is_none() || out_of_tries || Instant::now() + pause >= retry.deadline {
                break error;
            }
            warn!(secret = name, namespace, tried, error = %error.as_ref().map(ToString::to_string).unwrap_or_default(), "writing the rotated refresh token failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(retry.max_pause);
        };
        Err((error, desired))
    }
}

impl PendingRefreshTokens {
    /// The refresh token to send for `token`: one issued but not yet stored (memory), else the
    /// stored newest of this chain, else the `seed` from the credentials Secret.
    pub(super) async fn newest_refresh_token(&self, token: &NavigatorToken, seed: &Sensitive) -> Result<Sensitive, RefreshFailure> {
        let seed_fp = fingerprint(seed.expose().as_bytes());
        if let Some(pending) = self.newest(&ObjectRef::from_obj(token), &seed_fp) {
            return Ok(pending);
        }
        let name = store_name(&token.name_any());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &token.namespace().unwrap_or_default());
        let stored = api.get_opt(&name).await.map_err(Error::kube("get refresh-token Secret")).map_err(RefreshFailure::Kube)?;
        match read(stored.as_ref(), token, &seed_fp) {
            Stored::Newest(newest) => Ok(newest),
            Stored::Nothing => Ok(seed.clone()),
            Stored::Foreign => Err(RefreshFailure::Blocked(Blocked {
                reason: SECRET_CONFLICT,
                message: format!(
                    "Secret {name} already exists and was not created by this operator to keep this NavigatorToken's refresh token; it is left untouched. Delete or rename it"
                ),
            })),
        }
    }

    /// Remembers a refresh token just issued for `token`'s chain from `seed`: until it is
    /// written ([`PendingRefreshTokens::store_pending_refresh_token`]), it is the newest.
    pub(super) fn remember_refresh_token(&self, token: &NavigatorToken, seed: &Sensitive, newest: Sensitive) {
        let seed_fp = fingerprint(seed.expose().as_bytes());
        self.remember(ObjectRef::from_obj(token), seed_fp, newest);
    }

    /// Writes the refresh token waiting in memory for `token`, if any: a few tries within
    /// [`RECONCILE_BUDGET`], then it stays in memory for the reconcile's retry (or a flush).
    pub(super) async fn store_pending_refresh_token(&self, token: &NavigatorToken) -> Result<(), SecretWriteFailure> {
        let retry = Retry {
            tries: Some(RECONCILE_TRIES),
            first_pause: Duration::from_secs(2),
            max_pause: Duration::from_secs(4),
            deadline: Instant::now() + RECONCILE_BUDGET,
        };
        let Err((error, desired)) = self.write(&ObjectRef::from_obj(token), &retry).await else { return Ok(()) };
        let (namespace, name) = (token.namespace().unwrap_or_default(), desired.name_any());
        let failure = match &error {
            Some(error) => SecretWriteFailure::classify(error, &namespace, &name, &desired),
            None => SecretWriteFailure {
                reason: SECRET_WRITE_FAILED,
                message: format!("writing Secret {name} did not finish within {}s", RECONCILE_BUDGET.as_secs()),
            },
        };
        warn!(reason = failure.reason, message = %failure.message, "writing the refresh-token Secret failed; the new refresh token stays in memory");
        Err(failure)
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
        let written = desired("team-a", "partner-api", &Sensitive::new("rotated-2"), &seed_fp);
        assert_eq!(written.name_any(), "partner-api-refresh-token");
        // No owner: a NavigatorToken deleted and created again finds the chain.
        assert!(written.owner_references().is_empty());
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
