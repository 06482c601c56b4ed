//! What the ClusterNavigatorToken reconciles share: the NavigatorToken controller's context,
//! their own caches, and the token each ClusterNavigatorToken issued last (memory, then store).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use super::namespaces::NamespaceCache;
use super::plan::NamespaceInfo;
use super::store;
use crate::Error;
use crate::controller::context::Context;
use crate::controller::observe::{self, Blocked, Credentials};
use crate::controller::secret::TokenMaterial;
use crate::controller::write_failure::SecretWriteFailure;
use crate::crd::ClusterNavigatorToken;
use crate::metrics::TokenLabels;
use crate::reasons::CREDENTIALS_NAMESPACE_NOT_ALLOWED;

/// Settings of the ClusterNavigatorToken controller.
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    /// Namespaces a ClusterNavigatorToken may read credentials from (`--cluster-credentials-namespace`,
    /// default the operator's own). Empty: every ClusterNavigatorToken is refused.
    pub credentials_namespaces: Vec<String>,
}

/// Shared state of the ClusterNavigatorToken reconciles.
pub(super) struct ClusterContext {
    /// The NavigatorToken controller's context: client, token client, managed-Secret and
    /// credentials caches, events, metrics (shared, not watched twice).
    pub(super) base: Arc<Context>,
    pub(super) store: Store<ClusterNavigatorToken>,
    pub(super) namespaces: NamespaceCache,
    pub(super) settings: ClusterSettings,
    /// The current token per ClusterNavigatorToken name, the one the operator trusts (see
    /// `store`): a namespace that starts to match gets it without a new token request.
    pub(super) remembered: Arc<Mutex<HashMap<String, Remembered>>>,
    /// True once the ClusterNavigatorToken and Namespace watches have listed.
    pub(super) synced: tokio::sync::watch::Receiver<bool>,
}

/// A token kept in memory for one ClusterNavigatorToken.
pub(super) struct Remembered {
    uid: String,
    inputs_fp: String,
    material: TokenMaterial,
    /// Written to the store; until then each reconcile tries again.
    stored: bool,
}

/// The token a ClusterNavigatorToken issued last, as the operator trusts it.
#[derive(Clone)]
pub(super) struct Trusted {
    pub(super) material: TokenMaterial,
    /// Issued from the current inputs (else the plan asks for a new one).
    pub(super) inputs_current: bool,
    /// Not yet written to the store.
    pub(super) unstored: bool,
}

impl ClusterContext {
    /// The token `cnvt` issued last, if unexpired: from memory, else (after a restart or a change
    /// of leader) from its store in the credentials namespace, read once while status says a
    /// token is valid. Never from a namespace's copy.
    pub(super) async fn trusted_token(
        &self,
        cnvt: &ClusterNavigatorToken,
        inputs_fp: &str,
        now: Timestamp,
    ) -> Result<Option<Trusted>, Error> {
        let in_memory = {
            let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            remembered.get(&cnvt.name_any()).filter(|e| Some(e.uid.as_str()) == cnvt.metadata.uid.as_deref()).map(|e| Trusted {
                material: e.material.clone(),
                inputs_current: e.inputs_fp == inputs_fp,
                unstored: !e.stored,
            })
        };
        if let Some(trusted) = in_memory {
            return Ok((trusted.material.times.expires_at > now).then_some(trusted));
        }
        let claimed = cnvt.status.as_ref().and_then(|s| s.token.expires_at.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
        let namespace = &cnvt.spec.credentials_secret_ref.namespace;
        if claimed.is_none_or(|expiry| expiry <= now) || !self.settings.credentials_namespaces.contains(namespace) {
            return Ok(None);
        }
        let api: Api<Secret> = Api::namespaced(self.base.client.clone(), namespace);
        let stored =
            api.get_opt(&store::store_name(&cnvt.name_any())).await.map_err(Error::kube("get ClusterNavigatorToken store Secret"))?;
        let Some((material, stored_fp)) = stored.as_ref().and_then(|s| store::read(s, cnvt)) else {
            info!("no stored token to recover; a new token will be requested");
            return Ok(None);
        };
        if material.times.expires_at <= now {
            return Ok(None);
        }
        self.remember(cnvt, &stored_fp, &material, true);
        Ok(Some(Trusted { material, inputs_current: stored_fp == inputs_fp, unstored: false }))
    }

    fn remember(&self, cnvt: &ClusterNavigatorToken, inputs_fp: &str, material: &TokenMaterial, stored: bool) {
        let entry = Remembered { uid: cnvt.uid().unwrap_or_default(), inputs_fp: inputs_fp.to_owned(), material: material.clone(), stored };
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).insert(cnvt.name_any(), entry);
    }

    /// Writes `material` to the store, before any namespace gets it. On failure it stays in
    /// memory, marked unstored, and the next reconcile tries again.
    pub(super) async fn store_token(&self, cnvt: &ClusterNavigatorToken, inputs_fp: &str, material: &TokenMaterial) {
        let desired = store::desired(cnvt, material, inputs_fp);
        let namespace = &cnvt.spec.credentials_secret_ref.namespace;
        let stored = match self.base.apply_secret_in(namespace, &desired).await {
            Ok(_) => true,
            Err(error) => {
                let failure = SecretWriteFailure::classify(&error, namespace, &desired.name_any(), &desired);
                warn!(reason = failure.reason, message = %failure.message, "could not store the token in the credentials namespace; kept in memory, retried at the next reconcile");
                false
            }
        };
        self.remember(cnvt, inputs_fp, material, stored);
    }

    /// True while the token in memory for `cnvt` waits to be written to the store.
    pub(super) fn unstored(&self, cnvt: &ClusterNavigatorToken) -> bool {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).get(&cnvt.name_any()).is_some_and(|e| !e.stored)
    }

    /// Drops what is kept about a ClusterNavigatorToken that is gone.
    pub(super) fn forget(&self, name: &str) {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        self.base.metrics.forget(&labels(name));
    }

    pub(super) fn namespace_infos(&self) -> Vec<NamespaceInfo> {
        self.namespaces.infos()
    }

    /// The credentials of `cnvt`: only from a namespace the operator allows, then read as a
    /// NavigatorToken reads them (no API call).
    pub(super) fn read_credentials(&self, cnvt: &ClusterNavigatorToken) -> Result<Credentials, Blocked> {
        let reference = &cnvt.spec.credentials_secret_ref;
        if !self.settings.credentials_namespaces.contains(&reference.namespace) {
            let allowed = match self.settings.credentials_namespaces.as_slice() {
                [] => "it allows none: start it with --cluster-credentials-namespace, or with POD_NAMESPACE set".to_owned(),
                list => format!("it allows {}", list.join(", ")),
            };
            return Err(Blocked {
                reason: CREDENTIALS_NAMESPACE_NOT_ALLOWED,
                message: format!(
                    "spec.credentialsSecretRef.namespace {} is not a namespace the operator reads cluster credentials from ({allowed}). Move the credentials Secret to an allowed namespace, or have the operator's admin allow this one with --cluster-credentials-namespace",
                    reference.namespace
                ),
            });
        }
        observe::read_credentials(&self.base.credentials, &reference.secret, &reference.namespace)
    }
}

/// Metric labels of a ClusterNavigatorToken: its name, and an empty namespace.
pub(super) fn labels(name: &str) -> TokenLabels {
    TokenLabels { namespace: String::new(), name: name.to_owned() }
}
