//! The state the NavigatorToken reconciles share (clients, caches, what is kept per token), and
//! the ClusterNavigatorToken reconciles through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};

use super::credentials::CredentialsSecret;
use super::events::Publisher;
use super::refresh_store::PendingRefreshTokens;
use super::secret::{SecretCache, TokenMaterial};
use super::token_cache::TokenCache;
use crate::crd::NavigatorToken;
use crate::metrics::{Metrics, TokenLabels};
use crate::token::TokenClient;

/// Shared state of a controller's reconciles.
pub struct Context {
    pub(super) client: Client,
    pub(super) tokens: TokenClient,
    pub(super) token_cache: TokenCache,
    pub(super) managed_secrets: SecretCache,
    /// Credentials Secrets, each reduced to a bounded [`CredentialsSecret`].
    pub(super) credentials: Store<CredentialsSecret>,
    pub(super) events: Publisher,
    pub(super) metrics: Arc<Metrics>,
    /// Fingerprint of the token client's settings (see `secret::settings_fingerprint`).
    pub(super) settings_fp: String,
    /// What is remembered per NavigatorToken between reconciles.
    pub(super) per_token: Arc<PerToken>,
    /// Rotated refresh tokens not yet in their Secret (shared with `main`, which flushes them).
    pub(super) pending_refresh: Arc<PendingRefreshTokens>,
    /// True once every watch has listed.
    pub(super) synced: tokio::sync::watch::Receiver<bool>,
    /// True once a graceful stop began (the watches end; reconciles in flight finish).
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
}

/// State kept per NavigatorToken between reconciles (besides its metric series), dropped when
/// the object is deleted.
#[derive(Default)]
pub(super) struct PerToken {
    /// Tokens issued but not yet stored (the Secret write failed): reused instead of requesting
    /// another, so a failed write never costs a second token request in a window.
    pub(super) unstored: Mutex<HashMap<ObjectRef<NavigatorToken>, (String, TokenMaterial)>>,
    /// Writes the caches had not shown when their reconcile ended (see `caches_caught_up`).
    pub(super) lagging: Mutex<HashMap<ObjectRef<NavigatorToken>, LaggingWrites>>,
    /// When a rollout restart that failed is due to be replayed (see `rollout`); after a
    /// restart of the operator, at once.
    pub(super) rollout_replay: Mutex<HashMap<ObjectRef<NavigatorToken>, Timestamp>>,
}

impl PerToken {
    pub(super) fn forget(&self, key: &ObjectRef<NavigatorToken>) {
        self.unstored.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        self.lagging.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        // Not the pending rotated refresh token (`PendingRefreshTokens`): it is the only copy,
        // and a NavigatorToken deleted and created again (a GitOps "replace") continues from it.
        self.rollout_replay.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// Drops what is kept for NavigatorToken `key` once it is gone: its state between reconciles and
/// its metric series.
pub(super) fn forget_token(per_token: &PerToken, metrics: &Metrics, key: &ObjectRef<NavigatorToken>) {
    per_token.forget(key);
    metrics.forget(&TokenLabels { namespace: key.namespace.clone().unwrap_or_default(), name: key.name.clone() });
}

/// Writes of ours that the watch caches had not shown when the reconcile that made them ended.
#[derive(Clone, Debug, Default)]
pub(super) struct LaggingWrites {
    /// The target Secret's name and the resourceVersion written.
    pub(super) secret: Option<(String, String)>,
    /// The resourceVersion of the status written.
    pub(super) status: Option<String>,
}
