//! The Kubernetes writes and uncached reads of a reconcile, with their retry and
//! read-your-writes rules.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::debug;

use super::context::{Context, LaggingWrites};
use super::{queue, secret};
use crate::crd::{NavigatorToken, NavigatorTokenStatus};
use crate::{Error, FIELD_MANAGER};

/// How long a reconcile waits for the watch caches to show its own writes.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

impl Context {
    /// A Secret of the target name that is not in the managed cache: one GET before a token is
    /// spent tells "no Secret yet" from "someone else's Secret".
    pub(super) async fn uncached_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(Error::kube("get target Secret"))
    }

    /// Whether `token` still exists (the same object, by uid), asked of the API server: the
    /// cache may not show a deletion yet when the watch of Secrets already shows what the
    /// deletion caused (its Secret collected).
    pub(super) async fn still_exists(&self, token: &NavigatorToken) -> Result<bool, Error> {
        let namespace = token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<NavigatorToken> = Api::namespaced(self.client.clone(), &namespace);
        let found = api.get_metadata_opt(&token.name_any()).await.map_err(Error::kube("get NavigatorToken"))?;
        Ok(found.is_some_and(|found| found.metadata.uid == token.metadata.uid))
    }

    /// Applies the target Secret of `token` (in the token's namespace).
    pub(super) async fn apply_secret(&self, token: &NavigatorToken, desired: &Secret) -> Result<(), kube::Error> {
        let namespace = token.namespace().unwrap_or_default();
        if let Some(lag) = self.apply_secret_in(&namespace, desired).await? {
            self.record_lag(token, |lagging| lagging.secret = Some(lag));
        }
        Ok(())
    }

    /// Applies `desired` in `namespace` and waits (bounded) for the managed cache to show it.
    /// Returns the Secret's name and resourceVersion when the cache had not shown it in time.
    pub(super) async fn apply_secret_in(&self, namespace: &str, desired: &Secret) -> Result<Option<(String, String)>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let (name, params, patch) = (desired.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(desired));
        let written = with_retries(|| api.patch(&name, &params, &patch)).await?;
        let cached = || Some(self.managed_secrets.get(namespace, &name)?.resource_version.into_string());
        match written.resource_version() {
            Some(version) if !self.wait_for_cache(cached, &version).await => Ok(Some((name, version))),
            _ => Ok(None),
        }
    }

    /// Metadata of a Secret not in the managed cache: one GET tells "none yet" from someone
    /// else's Secret (whose data it does not transfer).
    pub(super) async fn uncached_secret_metadata(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_metadata_opt(name).await?;
        Ok(found.map(|meta| Secret { metadata: meta.metadata, ..Secret::default() }))
    }

    /// Deletes a Secret this operator wrote, only if it is still the version the cache showed
    /// (a precondition): a Secret re-created or changed meanwhile is left alone. Gone already
    /// counts as deleted.
    pub(super) async fn delete_secret_version(&self, namespace: &str, name: &str, resource_version: &str) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions { resource_version: Some(resource_version.to_owned()), uid: None }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Applies `status` to the NavigatorToken's status subresource.
    pub(super) async fn apply_status(&self, token: &NavigatorToken, status: &NavigatorTokenStatus) -> Result<(), Error> {
        let namespace = token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<NavigatorToken> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "status": status});
        let (name, params, patch) = (token.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&patch));
        let written =
            with_retries(|| api.patch_status(&name, &params, &patch)).await.map_err(Error::kube("patch NavigatorToken status"))?;
        let key = queue::key(&name, &namespace);
        if let Some(version) = written.resource_version()
            && !self.wait_for_cache(|| self.token_cache.resource_version(&key), &version).await
        {
            self.record_lag(token, |lag| lag.status = Some(version));
        }
        Ok(())
    }

    /// True when the caches show every write of ours to `token` and its Secret that they had
    /// not shown in time. Until then a reconcile must not act: its view may predate a token
    /// it stored itself, and acting on it could request a second token for the same window.
    pub(super) async fn caches_caught_up(&self, token: &NavigatorToken) -> Result<bool, Error> {
        let key = ObjectRef::from_obj(token);
        let Some(writes) = self.lagging_writes(&key) else { return Ok(true) };
        let namespace = token.namespace().unwrap_or_default();
        let secret_shown = match &writes.secret {
            None => true,
            Some((name, version)) => match self.managed_secrets.get(&namespace, name) {
                Some(cached) => resource_version_at_least(&cached.resource_version, version),
                // The cache may lag behind the write, or the Secret may be gone (or no longer
                // ours) and the cache past it for good, whatever order the deletion and this
                // record came in: only the API server tells which.
                None => {
                    let gone = !self.managed_secret_exists(&namespace, name).await?;
                    if gone {
                        debug!(secret = name, "the Secret written is gone: the cache will never show that write");
                    }
                    gone
                }
            },
        };
        let status_shown = writes.status.as_ref().is_none_or(|version| {
            let cached = self.token_cache.resource_version(&queue::key(&token.name_any(), &namespace));
            cached.is_some_and(|rv| resource_version_at_least(&rv, version))
        });
        let caught_up = secret_shown && status_shown;
        if caught_up {
            self.per_token.lagging.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        }
        Ok(caught_up)
    }

    fn lagging_writes(&self, key: &ObjectRef<NavigatorToken>) -> Option<LaggingWrites> {
        self.per_token.lagging.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Whether Secret `namespace/name` exists with the label that puts it in the managed cache.
    async fn managed_secret_exists(&self, namespace: &str, name: &str) -> Result<bool, Error> {
        let found = self.uncached_secret_metadata(namespace, name).await.map_err(Error::kube("get target Secret"))?;
        Ok(found.as_ref().is_some_and(secret::carries_managed_label))
    }

    fn record_lag(&self, token: &NavigatorToken, record: impl FnOnce(&mut LaggingWrites)) {
        let mut lagging = self.per_token.lagging.lock().unwrap_or_else(|p| p.into_inner());
        record(lagging.entry(ObjectRef::from_obj(token)).or_default());
    }
}

/// Retries a write a few times on conflicts, throttling and server errors: they are usually
/// momentary, and a failed Secret write would otherwise wait for the error policy's requeue.
pub(super) async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..3 {
        match write().await {
            Err(kube::Error::Api(status)) if matches!(status.code, 409 | 429 | 500..=599) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    write().await
}

impl Context {
    /// Waits (bounded) until a watch cache shows a write of ours, so the next reconcile cannot act
    /// on the state from before it (which could request a second token). False when it timed out,
    /// or when the controllers are stopping: their watches have ended, the caches will not catch
    /// up, and no next reconcile will read them.
    pub(super) async fn wait_for_cache(&self, cached_version: impl Fn() -> Option<String>, written: &str) -> bool {
        let caught_up = || cached_version().is_some_and(|rv| resource_version_at_least(&rv, written));
        let deadline = Instant::now() + READ_YOUR_WRITES_TIMEOUT;
        while !caught_up() {
            if Instant::now() >= deadline || *self.stopping.borrow() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Waits until the watches behind `synced` have listed: reads must come from listed caches,
    /// or a restart would look like "no Secret yet". False when the controllers stop first (a
    /// watch refused its list, say): the reconcile must then end, or the stop would wait for it
    /// for good.
    pub(super) async fn wait_listed(&self, synced: &tokio::sync::watch::Receiver<bool>) -> bool {
        let (mut synced, mut stopping) = (synced.clone(), self.stopping.clone());
        tokio::select! {
            biased;
            _ = synced.wait_for(|listed| *listed) => true,
            _ = stopping.wait_for(|stopping| *stopping) => false,
        }
    }
}

/// resourceVersions are opaque, but etcd's are integers; compare numerically when both are.
pub(super) fn resource_version_at_least(have: &str, want: &str) -> bool {
    match (have.parse::<u64>(), want.parse::<u64>()) {
        (Ok(h), Ok(w)) => h >= w,
        _ => have == want,
    }
}
