//! The reconcile loop: observe (caches) → decide (`plan`, pure) → act (token request, Secret and
//! status writes, events).

pub mod events;
pub mod plan;
pub mod secret;
pub mod status;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use self::events::{EventType, Publisher};
use self::plan::{FailureState, IssueReason, Observed, Step, TargetSecret};
use self::secret::{CredentialsVersion, ManagedSecret, SecretCache, TokenMaterial, TokenTimes};
use self::status::{REASON_REFRESH_FAILING, REASON_SUSPENDED, REASON_TOKEN_VALID};
use crate::crd::{NavigatorToken, NavigatorTokenStatus};
use crate::metrics::{Metrics, ReconcileLabels, RequestLabels, TokenLabels};
use crate::redact::Sensitive;
use crate::token::{RetryClass, TokenClient, TokenRequest};
use crate::{CREDENTIALS_LABEL, Error, FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Reason when the credentials Secret is not in the cache (refined on report).
const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
/// Reason when a Secret of the target name belongs to someone else.
const SECRET_CONFLICT: &str = "SecretConflict";

/// kubectl apply's copy of the whole object.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How long a reconcile waits for the watch caches to show its own writes.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for one controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace to watch; `None` for all.
    pub namespace: Option<String>,
    /// Label selector on NavigatorTokens.
    pub selector: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Reporting instance for events (the pod name).
    pub instance: String,
}

/// Shared state of a controller's reconciles.
pub struct Context {
    client: Client,
    tokens: TokenClient,
    token_store: Store<NavigatorToken>,
    managed_secrets: SecretCache,
    credentials: Store<Secret>,
    events: Publisher,
    metrics: Arc<Metrics>,
    /// Tokens issued but not yet stored (the Secret write failed): reused instead of requesting
    /// another, so an API server hiccup never costs a second token request in a window.
    unstored: Mutex<HashMap<ObjectRef<NavigatorToken>, (String, TokenMaterial)>>,
    /// True once every watch has listed.
    synced: tokio::sync::watch::Receiver<bool>,
}

/// A condition that stops a token request before it is made: the user must change something.
#[derive(Debug, Clone, PartialEq)]
struct Blocked {
    reason: &'static str,
    message: String,
}

struct Credentials {
    client_id: String,
    client_secret: Sensitive,
    version: CredentialsVersion,
}

/// Runs the controller until `shutdown` resolves. `on_synced` fires once every cache has listed.
pub async fn run(
    client: Client,
    tokens: TokenClient,
    settings: Settings,
    metrics: Arc<Metrics>,
    on_synced: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = settings.namespace.as_deref();
    let token_api: Api<NavigatorToken> = scoped_api(&client, ns);
    let secret_api: Api<Secret> = scoped_api(&client, ns);

    let mut token_watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &settings.selector {
        token_watch = token_watch.labels(selector);
    }
    // kube's Store::wait_until_ready wakes only one of several waiters, so "listed" is tracked
    // here from the watch streams themselves and shared through a watch channel.
    let sync = SyncTracker::new(3);
    let mut synced = sync.receiver();
    tokio::spawn(async move {
        if synced.wait_for(|done| *done).await.is_ok() {
            on_synced();
        }
    });
    let (token_store, token_events) = cached_watch(token_api, token_watch, &sync);
    // Two label-selected Secret watches: the operator never lists or caches unrelated Secrets.
    let managed_selector = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let managed_secrets = SecretCache::default();
    let managed_events =
        watch(scoped_api::<ManagedSecret>(&client, ns), managed_selector).inspect_ok(managed_secrets.writer()).inspect(sync.marker());
    let credentials_selector = watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true"));
    let (credentials, credentials_events) = cached_watch(secret_api, credentials_selector, &sync);

    let context = Arc::new(Context {
        client: client.clone(),
        tokens,
        token_store: token_store.clone(),
        managed_secrets: managed_secrets.clone(),
        credentials: credentials.clone(),
        events: Publisher::new(client, settings.instance.clone()),
        metrics,
        unstored: Mutex::default(),
        synced: sync.receiver(),
    });

    let users_of_credentials = token_store.clone();
    Controller::for_stream(token_events.applied_objects(), token_store)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .watches_stream(changes_after_first_list(managed_events), |secret: ManagedSecret| {
            Some(ObjectRef::new(secret.cached.token_name.as_deref()?).within(&secret.namespace()?))
        })
        .watches_stream(changes_after_first_list(credentials_events), move |secret: Secret| {
            let (name, ns) = (secret.name_any(), secret.namespace());
            users_of_credentials
                .state()
                .into_iter()
                .filter(|t| t.namespace() == ns && t.spec.credentials_secret_ref.name == name)
                .map(|t| ObjectRef::from_obj(&*t))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn scoped_api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>>(client: &Client, ns: Option<&str>) -> Api<K> {
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch whose lists come in pages of 100: the page being decoded is a large part of the
/// operator's peak memory.
fn watch<K>(api: Api<K>, config: watcher::Config) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, config.page_size(100)).default_backoff()
}

/// A watch feeding a kube `Store` (without the metadata nobody reads), counting towards `sync`.
fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    sync: &SyncTracker,
) -> (Store<K>, impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + use<K>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    // The marker comes after `reflect` so that "synced" implies the store holds the whole list.
    let events = watch(api, config).modify(strip_unread_metadata).reflect(writer).inspect(sync.marker());
    (store, events)
}

/// The objects of a related watch whose changes should reconcile their NavigatorTokens: all
/// touched objects, except those of the first list. That list triggers nothing because every
/// NavigatorToken is reconciled when its own first list arrives; triggering again from 10,000
/// listed Secrets parked 10,000 more requests in kube's scheduler, each carrying a copy of the
/// Secret's reference (a dozen strings). Relists still trigger: changes may hide in them. Watch
/// errors are dropped, as `touched_objects` would pass them on to be dropped; the watch retries.
fn changes_after_first_list<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    let mut listed = false;
    events.filter_map(move |event| {
        let changed = match event {
            Ok(watcher::Event::InitDone) => {
                listed = true;
                None
            }
            Ok(watcher::Event::InitApply(object)) if listed => Some(object),
            Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => Some(object),
            _ => None,
        };
        std::future::ready(changed.map(Ok))
    })
}

/// Counts watches that have completed their first list; the channel turns true when all have.
struct SyncTracker {
    remaining: Arc<std::sync::atomic::AtomicUsize>,
    sender: Arc<tokio::sync::watch::Sender<bool>>,
}

impl SyncTracker {
    fn new(watches: usize) -> Self {
        SyncTracker { remaining: Arc::new(watches.into()), sender: Arc::new(tokio::sync::watch::channel(false).0) }
    }

    fn receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.sender.subscribe()
    }

    /// An `inspect` callback for one watch stream: counts its first InitDone.
    fn marker<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let (remaining, sender) = (self.remaining.clone(), self.sender.clone());
        let mut counted = false;
        move |event| {
            if !counted && matches!(event, Ok(watcher::Event::InitDone)) {
                counted = true;
                if remaining.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    sender.send_replace(true);
                }
            }
        }
    }
}

/// managedFields and kubectl's last-applied copy of the object are large and unused here:
/// dropping them keeps the caches small (and the last-applied copy of a credentials Secret
/// holds its data in clear).
fn strip_unread_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Handles errors of the Kubernetes side (token errors are handled in `reconcile`): retry soon.
fn error_policy(token: Arc<NavigatorToken>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = token.namespace().unwrap_or_default(), name = token.name_any(), %error, "reconcile failed; retrying");
    ctx.metrics.reconciles.get_or_create(&ReconcileLabels { result: "error".into() }).inc();
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(token: Arc<NavigatorToken>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let span = info_span!("reconcile", namespace = token.namespace().unwrap_or_default(), name = token.name_any());
    let result = reconcile_inner(&token, &ctx).instrument(span).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.metrics.reconciles.get_or_create(&ReconcileLabels { result: "ok".into() }).inc();
    }
    result
}

async fn reconcile_inner(token: &NavigatorToken, ctx: &Context) -> Result<Action, Error> {
    // Reads must come from listed caches, or a restart would look like "no Secret yet".
    let _ = ctx.synced.clone().wait_for(|synced| *synced).await;
    let labels = TokenLabels { namespace: token.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?, name: token.name_any() };
    if token.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget(&labels);
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    debug!(generation = token.metadata.generation, resource_version = token.resource_version(), "reconciling");
    let previous = token.status.as_ref();
    let mut action = Actor { token, ctx, previous, now, labels: &labels };

    let credentials = ctx.read_credentials(token, &labels.namespace);
    let refresh_before = parse_duration(token.spec.refresh_before.as_deref(), "refreshBefore");
    let validity = parse_duration(token.spec.validity.as_deref(), "validity");
    let inputs = match (credentials, refresh_before, validity) {
        (Ok(c), Ok(r), Ok(v)) => Ok((c, r, v)),
        (Err(b), _, _) | (_, Err(b), _) | (_, _, Err(b)) => Err(b),
    };
    let inputs_fp = match &inputs {
        Ok((c, ..)) => secret::inputs_fingerprint(token, &c.version),
        Err(blocked) => secret::fingerprint(format!("{}{:?}", blocked.reason, token.spec).as_bytes()),
    };
    let failures = FailureState {
        consecutive_failures: previous.map_or(0, |s| s.consecutive_failures),
        retry_at: previous.and_then(|s| s.next_refresh_at.as_deref()).and_then(|t| t.parse().ok()),
        same_inputs: previous.and_then(|s| s.inputs_fingerprint.as_deref()) == Some(inputs_fp.as_str()),
    };
    let secret_name = token.target_secret_name();
    let cached_secret = ctx.managed_secrets.get(&labels.namespace, &secret_name);
    let target = secret::observe(cached_secret.as_ref(), token, &inputs_fp);
    let observed = Observed {
        suspended: token.spec.suspend,
        refresh_before: inputs.as_ref().ok().and_then(|(_, r, _)| *r),
        secret: target.clone(),
        failures,
        jitter_seed: jitter_seed(token),
    };
    let plan = plan::decide(&observed, now);
    let conflict = || {
        format!(
            "Secret {secret_name} already exists and was not created by this operator for this NavigatorToken; it is left untouched. Delete it or choose another spec.target.secretName"
        )
    };
    match (plan.step.clone(), inputs) {
        (Step::Suspended, _) => action.suspended(&target).await,
        (Step::WaitForRetry, _) => Ok(requeue_at(plan.next_at, now)),
        (Step::SecretConflict, _) => action.fail(&target, SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction, &inputs_fp).await,
        (_, Err(mut blocked)) => {
            if blocked.reason == CREDENTIALS_NOT_FOUND {
                blocked = ctx.explain_uncached_credentials(token, &labels.namespace).await?;
            }
            action.fail(&target, blocked.reason, &blocked.message, RetryClass::NeedsUserAction, &inputs_fp).await
        }
        (Step::Keep { rewrite_secret }, Ok((credentials, refresh_before, validity))) => {
            let kept = if rewrite_secret {
                // The cache holds fingerprints only: a rewrite (a template change, rare) reads the token once.
                let stored = ctx.uncached_secret(&labels.namespace, &secret_name).await?;
                stored.and_then(|s| secret::material(&s, token)).map(|m| (m.times, Some(m)))
            } else {
                cached_secret.as_ref().and_then(|s| s.times).map(|times| (times, None))
            };
            match kept {
                Some((times, rewrite)) => action.succeed(times, rewrite.as_ref(), &inputs_fp, plan.next_at, refresh_before, None).await,
                // The Secret changed since the cache saw it; a new token is the safe answer.
                None => action.issue(IssueReason::Drift, &credentials, validity, refresh_before, &inputs_fp, &target).await,
            }
        }
        (Step::Issue(reason), Ok((credentials, refresh_before, validity))) => {
            if cached_secret.is_none()
                && let Some(existing) = ctx.uncached_secret(&labels.namespace, &secret_name).await?
                && !secret::is_ours(&existing, token)
            {
                return action.fail(&target, SECRET_CONFLICT, &conflict(), RetryClass::NeedsUserAction, &inputs_fp).await;
            }
            action.issue(reason, &credentials, validity, refresh_before, &inputs_fp, &target).await
        }
    }
}

/// One reconcile's acting half: writes and events for a decision already taken.
struct Actor<'a> {
    token: &'a NavigatorToken,
    ctx: &'a Context,
    previous: Option<&'a NavigatorTokenStatus>,
    now: Timestamp,
    labels: &'a TokenLabels,
}

impl Actor<'_> {
    async fn issue(
        &mut self,
        reason: IssueReason,
        credentials: &Credentials,
        validity: Option<Duration>,
        refresh_before: Option<Duration>,
        inputs_fp: &str,
        target: &TargetSecret,
    ) -> Result<Action, Error> {
        let key = ObjectRef::from_obj(self.token);
        let unstored = self.ctx.unstored.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        if let Some((fp, material)) = unstored.filter(|(fp, m)| fp == inputs_fp && m.times.expires_at > self.now) {
            info!(?reason, "storing the token issued before the last Secret write failed");
            return self.store_new_token(material, &fp, refresh_before, reason).await;
        }
        let spec = &self.token.spec;
        let request = TokenRequest {
            endpoint_type: spec.endpoint_type(),
            base_url: spec.endpoint_url(),
            org_id: spec.org_id.clone(),
            client_id: credentials.client_id.clone(),
            client_secret: credentials.client_secret.clone(),
            scope: spec.scope.clone(),
            validity,
            ca_bundle: spec.ca_bundle().map(str::to_owned),
        };
        let started = Instant::now();
        let result = self.ctx.tokens.issue(&request).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.reason(),
        };
        let endpoint_type = format!("{:?}", request.endpoint_type).replace("Csp", "CSP");
        self.ctx.metrics.token_requests.get_or_create(&RequestLabels { endpoint_type, outcome: outcome.into() }).inc();
        self.ctx.metrics.token_request_duration.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(issued) => {
                info!(?reason, expires_at = %issued.expires_at, source = ?issued.expiry_source, "issued a token");
                // Whole seconds, as annotations and status hold them, so that a restart computes
                // exactly the same refresh time (and finds nothing to write).
                let material = TokenMaterial {
                    access_token: issued.access_token,
                    id_token: issued.id_token,
                    times: TokenTimes { issued_at: whole_seconds(issued.issued_at), expires_at: whole_seconds(issued.expires_at) },
                };
                self.store_new_token(material, inputs_fp, refresh_before, reason).await
            }
            Err(error) => {
                warn!(reason = error.reason(), %error, "token request failed");
                self.fail(target, error.reason(), &error.to_string(), error.retry_class(), inputs_fp).await
            }
        }
    }

    async fn store_new_token(
        &mut self,
        material: TokenMaterial,
        inputs_fp: &str,
        refresh_before: Option<Duration>,
        reason: IssueReason,
    ) -> Result<Action, Error> {
        if let Err(error) = self.ctx.apply_secret(&secret::desired(self.token, &material, inputs_fp)).await {
            let key = ObjectRef::from_obj(self.token);
            self.ctx.unstored.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (inputs_fp.to_owned(), material));
            return Err(error);
        }
        self.succeed(material.times, None, inputs_fp, None, refresh_before, Some(reason)).await
    }

    /// Records a valid token (writing `rewrite` into the Secret first, when given).
    async fn succeed(
        &mut self,
        times: TokenTimes,
        rewrite: Option<&TokenMaterial>,
        inputs_fp: &str,
        recheck_at: Option<Timestamp>,
        refresh_before: Option<Duration>,
        issued: Option<IssueReason>,
    ) -> Result<Action, Error> {
        if let Some(material) = rewrite {
            self.ctx.apply_secret(&secret::desired(self.token, material, inputs_fp)).await?;
        }
        let refresh_at = plan::refresh_at(times.issued_at, times.expires_at, refresh_before, jitter_seed(self.token));
        let mut status = NavigatorTokenStatus {
            observed_generation: self.token.metadata.generation,
            secret_name: Some(self.token.target_secret_name()),
            issued_at: Some(status::rfc3339(times.issued_at)),
            expires_at: Some(status::rfc3339(times.expires_at)),
            next_refresh_at: Some(status::rfc3339(refresh_at)),
            inputs_fingerprint: Some(inputs_fp.to_owned()),
            ..NavigatorTokenStatus::default()
        };
        let message = format!("Secret {} holds a token valid until {}", self.token.target_secret_name(), status::rfc3339(times.expires_at));
        status::set_ready(&mut status, self.previous, true, REASON_TOKEN_VALID, message, self.token.metadata.generation, self.now);
        self.write_status(status).await?;
        self.ctx.metrics.token_expiry.get_or_create(self.labels).set(times.expires_at.as_second());
        // The failure series exists only while failing: 10,000 zeros would cost memory and scrapes.
        self.ctx.metrics.consecutive_failures.remove(self.labels);

        let failures_before = self.previous.map_or(0, |s| s.consecutive_failures);
        let note = format!("token valid until {}", status::rfc3339(times.expires_at));
        if failures_before > 0 && issued.is_some() {
            self.event(EventType::Normal, "Recovered", &format!("{note} after {failures_before} failed attempts")).await;
        } else if issued == Some(IssueReason::Initial) {
            self.event(EventType::Normal, "Issued", &format!("issued a {note}")).await;
        }
        // Keep's plan may look again sooner than the refresh (periodic re-check).
        Ok(requeue_at(Some(recheck_at.map_or(refresh_at, |at| at.min(refresh_at))), self.now))
    }

    async fn fail(
        &mut self,
        target: &TargetSecret,
        reason: &str,
        message: &str,
        class: RetryClass,
        inputs_fp: &str,
    ) -> Result<Action, Error> {
        let failures = self.previous.map_or(0, |s| s.consecutive_failures).saturating_add(1);
        // Rounded up to whole seconds, as status keeps it: never retry before a Retry-After.
        let retry_at = ceil_seconds(plan::add(self.now, plan::retry_delay(class, failures, jitter_seed(self.token))));
        // The token already in the Secret stays; status keeps describing it while it is valid.
        let current = match target {
            TargetSecret::Managed(Some(c)) if c.intact && c.expires_at > self.now => Some(c),
            _ => None,
        };
        let mut status = NavigatorTokenStatus {
            observed_generation: self.token.metadata.generation,
            secret_name: current.map(|_| self.token.target_secret_name()),
            issued_at: current.map(|c| status::rfc3339(c.issued_at)),
            expires_at: current.map(|c| status::rfc3339(c.expires_at)),
            next_refresh_at: Some(status::rfc3339(retry_at)),
            inputs_fingerprint: Some(inputs_fp.to_owned()),
            ..NavigatorTokenStatus::default()
        };
        status::record_failure(&mut status, self.previous, reason, message, self.now);
        let still_valid = current.filter(|_| class != RetryClass::NeedsUserAction);
        match still_valid {
            Some(c) => {
                let text = format!(
                    "{message}. The current token stays valid until {}; retrying at {}",
                    status::rfc3339(c.expires_at),
                    status::rfc3339(retry_at)
                );
                status::set_ready(&mut status, self.previous, true, REASON_REFRESH_FAILING, text, self.token.metadata.generation, self.now);
            }
            None => {
                let kept = current
                    .map(|c| format!(" The previous token stays in the Secret until it expires at {}.", status::rfc3339(c.expires_at)))
                    .unwrap_or_default();
                status::set_ready(
                    &mut status,
                    self.previous,
                    false,
                    reason,
                    format!("{message}.{kept}"),
                    self.token.metadata.generation,
                    self.now,
                );
            }
        }
        self.write_status(status).await?;
        self.ctx.metrics.consecutive_failures.get_or_create(self.labels).set(i64::from(failures));
        // One Event per failure episode and reason; status counts the attempts.
        let same_failure =
            self.previous.is_some_and(|p| p.consecutive_failures > 0 && p.last_failure.as_ref().is_some_and(|f| f.reason == reason));
        if !same_failure {
            self.event(EventType::Warning, reason, message).await;
        }
        Ok(requeue_at(Some(retry_at), self.now))
    }

    async fn suspended(&mut self, target: &TargetSecret) -> Result<Action, Error> {
        let current = match target {
            TargetSecret::Managed(Some(c)) if c.intact && c.expires_at > self.now => Some(c),
            _ => None,
        };
        let mut status = self.previous.cloned().unwrap_or_default();
        status.observed_generation = self.token.metadata.generation;
        status.next_refresh_at = None;
        let message = match current {
            Some(c) => format!("refreshing is suspended; the current token expires at {}", status::rfc3339(c.expires_at)),
            None => "refreshing is suspended and the Secret holds no valid token".to_owned(),
        };
        status::set_ready(
            &mut status,
            self.previous,
            current.is_some(),
            REASON_SUSPENDED,
            message,
            self.token.metadata.generation,
            self.now,
        );
        self.write_status(status).await?;
        // Look again at expiry so that Ready turns False when the token lapses.
        Ok(requeue_at(current.map(|c| c.expires_at), self.now))
    }

    async fn write_status(&self, status: NavigatorTokenStatus) -> Result<(), Error> {
        if self.previous == Some(&status) {
            return Ok(());
        }
        let name = self.token.name_any();
        let api: Api<NavigatorToken> = Api::namespaced(self.ctx.client.clone(), &self.labels.namespace);
        let patch = json!({"apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "status": status});
        let (params, patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(&patch));
        let written =
            with_retries(|| api.patch_status(&name, &params, &patch)).await.map_err(Error::kube("patch NavigatorToken status"))?;
        let key = ObjectRef::from_obj(&written);
        wait_for_cache(|| self.ctx.token_store.get(&key)?.resource_version(), written.resource_version()).await;
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        if let Err(error) = self.ctx.events.publish(self.token, type_, reason, note).await {
            warn!(%error, "could not publish event");
        }
    }
}

impl Context {
    /// The credentials, from the label-selected cache only (no API call).
    fn read_credentials(&self, token: &NavigatorToken, namespace: &str) -> Result<Credentials, Blocked> {
        let reference = &token.spec.credentials_secret_ref;
        let Some(secret) = self.credentials.get(&ObjectRef::new(&reference.name).within(namespace)) else {
            // Refined by `explain_uncached_credentials` when it is reported.
            return Err(Blocked {
                reason: CREDENTIALS_NOT_FOUND,
                message: format!("credentials Secret {} not found in namespace {namespace}", reference.name),
            });
        };
        let value = |key: &str| -> Result<String, Blocked> {
            let invalid = |what: &str| Blocked {
                reason: "CredentialsInvalid",
                message: format!("credentials Secret {}: key {key} {what}", reference.name),
            };
            let bytes = secret.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| invalid("is missing"))?;
            let text = String::from_utf8(bytes.0.clone()).map_err(|_| invalid("is not UTF-8 text"))?;
            let text = text.trim().to_owned();
            if text.is_empty() { Err(invalid("is empty")) } else { Ok(text) }
        };
        let client_id = value(reference.client_id_key())?;
        let client_secret = if reference.public_client { String::new() } else { value(reference.client_secret_key())? };
        Ok(Credentials {
            client_id,
            client_secret: Sensitive::new(client_secret),
            version: CredentialsVersion {
                uid: secret.uid().unwrap_or_default(),
                resource_version: secret.resource_version().unwrap_or_default(),
            },
        })
    }

    /// Not in the label-selected cache: one GET tells a missing Secret from a missing label.
    /// Only called when the failure is reported, never on a routine path.
    async fn explain_uncached_credentials(&self, token: &NavigatorToken, namespace: &str) -> Result<Blocked, Error> {
        let name = &token.spec.credentials_secret_ref.name;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let exists = api.get_metadata_opt(name).await.map_err(Error::kube("get credentials Secret"))?.is_some();
        Ok(if exists {
            Blocked {
                reason: "CredentialsNotLabelled",
                message: format!(
                    "credentials Secret {name} lacks the label {CREDENTIALS_LABEL}=true that lets the operator watch it; run: kubectl label secret -n {namespace} {name} {CREDENTIALS_LABEL}=true"
                ),
            }
        } else {
            Blocked { reason: CREDENTIALS_NOT_FOUND, message: format!("credentials Secret {name} not found in namespace {namespace}") }
        })
    }

    /// A Secret of the target name that is not in the managed cache: one GET before a token is
    /// spent tells "no Secret yet" from "someone else's Secret".
    async fn uncached_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(Error::kube("get target Secret"))
    }

    async fn apply_secret(&self, desired: &Secret) -> Result<(), Error> {
        let namespace = desired.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let (name, params, patch) = (desired.name_any(), PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(desired));
        let written = with_retries(|| api.patch(&name, &params, &patch)).await.map_err(Error::kube("apply target Secret"))?;
        wait_for_cache(|| Some(self.managed_secrets.get(&namespace, &name)?.resource_version), written.resource_version()).await;
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

fn parse_duration(value: Option<&str>, field: &str) -> Result<Option<Duration>, Blocked> {
    value
        .map(|v| crate::duration::parse(v).map_err(|e| Blocked { reason: "InvalidSpec", message: format!("spec.{field}: {e}") }))
        .transpose()
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn ceil_seconds(t: Timestamp) -> Timestamp {
    let whole = whole_seconds(t);
    if whole < t { plan::add(whole, Duration::from_secs(1)) } else { whole }
}

fn jitter_seed(token: &NavigatorToken) -> u64 {
    let mut hasher = DefaultHasher::new();
    token.metadata.uid.hash(&mut hasher);
    hasher.finish()
}

fn requeue_at(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => Action::requeue(at.duration_since(now).try_into().unwrap_or(Duration::ZERO).max(Duration::from_millis(100))),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> Secret {
        Secret { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
    }

    #[test]
    fn only_changes_after_the_first_list_trigger_reconciles() {
        use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
        let events = [Init, InitApply(secret("listed")), InitDone, Apply(secret("changed")), Delete(secret("deleted"))];
        let relist = [Init, InitApply(secret("relisted")), InitDone];
        let stream = futures::stream::iter(events.into_iter().chain(relist).map(Ok));
        let triggered: Vec<String> = futures::executor::block_on(changes_after_first_list(stream).map(|s| s.unwrap().name_any()).collect());
        assert_eq!(triggered, ["changed", "deleted", "relisted"]);
    }
}
