//! Refresh-token Secrets whose NavigatorToken is gone. They have no owner reference (see
//! `refresh_store::desired`): a NavigatorToken deleted and created again with the same name and
//! seed (a GitOps "replace") continues its chain from them. One still orphaned after
//! [`ORPHAN_GRACE`] is deleted.
//!
//! A sweep every [`SWEEP_INTERVAL`] lists the managed Secrets' metadata (no data), marks a store
//! without its NavigatorToken with [`ORPHANED_AT_ANNOTATION`], unmarks it when the
//! NavigatorToken is back, and deletes it once marked for longer than the grace period. Absence
//! is confirmed with an uncached GET: an operator sharded by `--selector` does not cache every
//! NavigatorToken.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::refresh_store::{REFRESH_TOKEN_FOR_ANNOTATION, store_name};
use super::token_cache::TokenCache;
use super::watches::scoped_api;
use crate::crd::NavigatorToken;
use crate::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Annotation on a refresh-token Secret: when a sweep first found its NavigatorToken gone.
pub const ORPHANED_AT_ANNOTATION: &str = "navigator.dev/orphaned-at";
/// How long an orphaned refresh-token Secret is kept for its NavigatorToken to come back.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Period of the sweep.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Managed Secrets per list page of a sweep. Unpaged, the first sweep after a restart with
/// 10,000 NavigatorTokens held every managed Secret's metadata at once and took the operator's
/// peak RSS from 51 to 134 MiB (bench/RESULTS.md).
const SWEEP_PAGE_SIZE: u32 = 100;

/// The longest name a NavigatorToken can have (a DNS subdomain).
const MAX_OBJECT_NAME: usize = 253;
/// Longer than any RFC 3339 timestamp the operator writes or `verdict` reads.
const MAX_TIMESTAMP: usize = 64;

/// What a sweep does with one refresh-token Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Keep,
    /// Its NavigatorToken is gone: record when.
    Mark,
    /// Its NavigatorToken is back: the mark goes.
    Unmark,
    /// Orphaned for longer than the grace period.
    Delete,
}

/// PURE: the verdict for a store whose NavigatorToken exists (`owner_exists`) or not, marked
/// orphaned at `orphaned_at` (the annotation's text, if any), at `now`.
pub fn verdict(owner_exists: bool, orphaned_at: Option<&str>, now: Timestamp) -> Verdict {
    match (owner_exists, orphaned_at) {
        (true, None) => Verdict::Keep,
        (true, Some(_)) => Verdict::Unmark,
        (false, None) => Verdict::Mark,
        // An unreadable mark counts from now: it is written again.
        (false, Some(at)) => match at.parse::<Timestamp>() {
            Ok(at) if now.duration_since(at) >= jiff::SignedDuration::try_from(ORPHAN_GRACE).unwrap_or_default() => Verdict::Delete,
            Ok(_) => Verdict::Keep,
            Err(_) => Verdict::Mark,
        },
    }
}

/// Sweeps every [`SWEEP_INTERVAL`] once `synced` turns true, until dropped (with the controller).
pub(super) async fn sweep_forever(
    client: Client,
    namespace: Option<String>,
    tokens: TokenCache,
    mut synced: tokio::sync::watch::Receiver<bool>,
) {
    if synced.wait_for(|done| *done).await.is_err() {
        // Never returns: the controller runs until this or it ends.
        return std::future::pending().await;
    }
    loop {
        if let Err(error) = sweep(&client, namespace.as_deref(), &tokens, Timestamp::now()).await {
            warn!(%error, "could not look for orphaned refresh-token Secrets; trying again in an hour");
        }
        tokio::time::sleep(SWEEP_INTERVAL).await;
    }
}

/// One sweep (see the module documentation).
pub(super) async fn sweep(client: &Client, namespace: Option<&str>, tokens: &TokenCache, now: Timestamp) -> Result<(), kube::Error> {
    let secrets: Api<Secret> = scoped_api(client, namespace);
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
    // Every page first, then the verdicts: judging costs requests, and a sweep slowed by them
    // between pages would outlive its continue token (410 Gone) and never reach the last pages.
    let mut stores = Vec::new();
    let mut params = ListParams::default().labels(&selector).limit(SWEEP_PAGE_SIZE);
    loop {
        let listed = secrets.list_metadata(&params).await?;
        stores.extend(listed.items.iter().filter_map(RefreshTokenStore::from_listed));
        match listed.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    for store in stores {
        judge(client, tokens, store, now).await?;
    }
    Ok(())
}

/// What a sweep keeps of a listed refresh-token Secret until it judges it.
struct RefreshTokenStore {
    name: String,
    namespace: String,
    owner: String,
    orphaned_at: Option<String>,
    resource_version: Option<String>,
}

impl RefreshTokenStore {
    /// The listed managed Secret, if it is the refresh-token store of the NavigatorToken it names.
    /// Its annotations are a tenant's to write and are kept until the last page is listed, so
    /// only in bounded form: an owner longer than an object name can be names no NavigatorToken,
    /// and a mark longer than a timestamp can be is unreadable (kept as such, empty).
    fn from_listed(meta: &PartialObjectMeta<Secret>) -> Option<Self> {
        let name = meta.name_any();
        let owner = meta
            .annotations()
            .get(REFRESH_TOKEN_FOR_ANNOTATION)
            .filter(|owner| owner.len() <= MAX_OBJECT_NAME && store_name(owner) == name)?;
        let orphaned_at = meta.annotations().get(ORPHANED_AT_ANNOTATION);
        Some(RefreshTokenStore {
            owner: owner.clone(),
            namespace: meta.namespace().unwrap_or_default(),
            orphaned_at: orphaned_at.map(|at| if at.len() <= MAX_TIMESTAMP { at.clone() } else { String::new() }),
            resource_version: meta.resource_version(),
            name,
        })
    }
}

/// Marks, unmarks or deletes one refresh-token store; an error of the API reading its
/// NavigatorToken ends the sweep.
async fn judge(client: &Client, tokens: &TokenCache, store: RefreshTokenStore, now: Timestamp) -> Result<(), kube::Error> {
    let RefreshTokenStore { name, namespace: ns, owner, orphaned_at, resource_version } = store;
    let cached = tokens.contains(&ns, &owner);
    let exists = cached || Api::<NavigatorToken>::namespaced(client.clone(), &ns).get_opt(&owner).await?.is_some();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let result = match verdict(exists, orphaned_at.as_deref(), now) {
        Verdict::Keep => Ok(()),
        Verdict::Mark => {
            info!(
                secret = name,
                namespace = ns,
                navigatortoken = owner.as_str(),
                grace = "24h",
                "the NavigatorToken of this refresh-token Secret is gone; kept for it to come back, then deleted"
            );
            let patch = json!({"metadata": {"annotations": {ORPHANED_AT_ANNOTATION: now.to_string()}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
        }
        Verdict::Unmark => {
            let patch = json!({"metadata": {"annotations": {ORPHANED_AT_ANNOTATION: null}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(drop)
        }
        Verdict::Delete => {
            info!(secret = name, namespace = ns, "deleting a refresh-token Secret orphaned for longer than 24h");
            // Only the version judged: a NavigatorToken re-created meanwhile rewrites it.
            let preconditions = Preconditions { resource_version, uid: None };
            let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::background() };
            api.delete(&name, &params).await.map(drop)
        }
    };
    if let Err(error) = result {
        warn!(secret = name, namespace = ns, %error, "could not mark or delete an orphaned refresh-token Secret; delete it by hand once its NavigatorToken is gone for good");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_oversized_annotations_are_not_kept_between_pages() {
        let listed = |owner: &str, orphaned_at: &str| {
            let mut meta = PartialObjectMeta::<Secret>::default();
            meta.metadata.name = Some(store_name(owner));
            meta.metadata.namespace = Some("team-a".into());
            let annotations = [(REFRESH_TOKEN_FOR_ANNOTATION, owner), (ORPHANED_AT_ANNOTATION, orphaned_at)];
            meta.metadata.annotations = Some(annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
            RefreshTokenStore::from_listed(&meta)
        };
        let store = listed("tok", "2026-12-04T10:00:00Z").expect("a store of tok");
        assert_eq!((store.owner.as_str(), store.orphaned_at.as_deref()), ("tok", Some("2026-12-04T10:00:00Z")));
        // A huge mark stays a mark that cannot be read (the verdict is the same), but empty.
        let huge_mark = listed("tok", &"9".repeat(200_000)).expect("still a store of tok");
        assert_eq!(huge_mark.orphaned_at.as_deref(), Some(""));
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        assert_eq!(verdict(false, huge_mark.orphaned_at.as_deref(), now), verdict(false, Some(&"9".repeat(200_000)), now));
        // A name no NavigatorToken can have, even one whose hashed store name matches.
        assert!(listed(&"a".repeat(200_000), "").is_none());
    }

    #[test]
    fn an_orphaned_store_is_marked_then_deleted_after_the_grace_period_unless_its_owner_returns() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        assert_eq!(verdict(true, None, now), Verdict::Keep);
        assert_eq!(verdict(false, None, now), Verdict::Mark);
        assert_eq!(verdict(false, Some("2026-12-03T10:00:01Z"), now), Verdict::Keep, "not yet 24 h");
        assert_eq!(verdict(false, Some("2026-12-03T10:00:00Z"), now), Verdict::Delete);
        assert_eq!(verdict(true, Some("2026-12-01T10:00:00Z"), now), Verdict::Unmark, "re-created: never deleted");
        assert_eq!(verdict(false, Some("yesterday"), now), Verdict::Mark);
    }
}
