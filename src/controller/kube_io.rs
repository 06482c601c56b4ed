//! The Kubernetes writes and uncached reads of a reconcile, with their retry and
//! read-your-writes rules.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Context;
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

    pub(super) async fn apply_secret(&self, desired: &Secret) -> Result<(), Error> {
        let namespace = desired.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let (name, params, patch) = (desired.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(desired));
        let written = with_retries(|| api.patch(&name, &params, &patch)).await.map_err(Error::kube("apply target Secret"))?;
        wait_for_cache(|| Some(self.managed_secrets.get(&namespace, &name)?.resource_version), written.resource_version()).await;
        Ok(())
    }

    /// Applies `status` to the NavigatorToken's status subresource.
    pub(super) async fn apply_status(&self, token: &NavigatorToken, status: &NavigatorTokenStatus) -> Result<(), Error> {
        let namespace = token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<NavigatorToken> = Api::namespaced(self.client.clone(), &namespace);
        let patch = json!({"apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "status": status});
        let (name, params, patch) = (token.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&patch));
        let written =
            with_retries(|| api.patch_status(&name, &params, &patch)).await.map_err(Error::kube("patch NavigatorToken status"))?;
        let key = ObjectRef::from_obj(&written);
        wait_for_cache(|| self.token_store.get(&key)?.resource_version(), written.resource_version()).await;
        Ok(())
    }
}

/// Retries a write a few times on conflicts, throttling and server errors: they are usually
/// momentary, and a failed Secret write would otherwise wait for the error policy's requeue.
async fn with_retries<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
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

/// Waits (bounded) until a watch cache shows a write of ours, so the next reconcile cannot act on
/// the state from before it (which could request a second token).
async fn wait_for_cache(cached_version: impl Fn() -> Option<String>, written: Option<String>) {
    let Some(written) = written else { return };
    let caught_up = || cached_version().is_some_and(|rv| resource_version_at_least(&rv, &written));
    let deadline = Instant::now() + READ_YOUR_WRITES_TIMEOUT;
    while !caught_up() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// resourceVersions are opaque, but etcd's are integers; compare numerically when both are.
fn resource_version_at_least(have: &str, want: &str) -> bool {
    match (have.parse::<u64>(), want.parse::<u64>()) {
        (Ok(h), Ok(w)) => h >= w,
        _ => have == want,
    }
}
