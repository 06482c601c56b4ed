//! Prometheus metrics (prometheus-client), served on the admin port.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api_counter::ApiLabels;
use crate::crd::{ClusterNavigatorToken, NavigatorTokenStatus};
use crate::reasons::{READY, RECONCILE_ERROR, RECONCILE_OK};

/// Identifies one NavigatorToken.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Labels of a token request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Navigator or CSP.
    pub endpoint_type: String,
    /// "success" or the failure reason.
    pub outcome: String,
}

/// Labels of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// "ok" or "error".
    pub result: String,
}

/// All metrics of the operator.
pub struct Metrics {
    /// The registry they are encoded from.
    pub registry: Registry,
    /// Expiry of the token in each Secret (unix seconds).
    pub token_expiry: Family<TokenLabels, Gauge>,
    /// Failed attempts in a row per token; no series while the token is healthy.
    pub consecutive_failures: Family<TokenLabels, Gauge>,
    /// Token requests by endpoint type and outcome.
    pub token_requests: Family<RequestLabels, Counter>,
    /// Token request latency.
    pub token_request_duration: Histogram,
    /// Reconciles by result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile latency.
    pub reconcile_duration: Histogram,
    /// The operator's Kubernetes API requests by verb and resource.
    pub kube_api_requests: Family<ApiLabels, Counter>,
    /// 1 while this replica leads (or runs without leader election), 0 while it stands by.
    pub leader: Gauge,
    /// The NavigatorTokens whose status gives per-token series at each scrape.
    pub statuses: Arc<StatusCollector>,
}

/// The NavigatorTokens and ClusterNavigatorTokens (`namespace=""`) in the controllers' caches,
/// for `navigator_token_ready`, `navigator_token_refresh_timestamp_seconds` and
/// `navigator_token_api_token_expiry_timestamp_seconds`. These series are written from the status at
/// scrape time, after the registry's text and a few hundred tokens at a time: they cost no
/// memory per token, are there from the first list after a restart, vanish with the object,
/// and a scrape at 10,000 tokens never holds their 2 MiB of text at once.
#[derive(Default)]
pub struct StatusCollector {
    caches: Mutex<Vec<CacheSnapshot>>,
}

/// Takes what a cache holds, for one scrape.
type CacheSnapshot = Box<dyn Fn() -> Vec<Arc<dyn CachedSeries>> + Send + Sync>;

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusCollector").finish_non_exhaustive()
    }
}

impl StatusCollector {
    /// Adds a cache: `snapshot` gives its objects (shared, not copied) at each scrape.
    pub fn watch(&self, snapshot: impl Fn() -> Vec<Arc<dyn CachedSeries>> + Send + Sync + 'static) {
        self.caches.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(snapshot));
    }

    /// Adds the cache of ClusterNavigatorTokens; their series have `namespace=""`.
    pub fn watch_cluster(&self, store: Store<ClusterNavigatorToken>) {
        self.watch(move || store.state().into_iter().map(|c| c as Arc<dyn CachedSeries>).collect());
    }

    fn snapshot(&self) -> Vec<Arc<dyn CachedSeries>> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner()).iter().flat_map(|snapshot| snapshot()).collect()
    }
}

/// An object in a cache that has per-token series.
pub trait CachedSeries: Send + Sync {
    /// Its namespace ("" for a ClusterNavigatorToken).
    fn namespace(&self) -> &str;
    /// Its name.
    fn name(&self) -> &str;
    /// What its series say.
    fn series(&self) -> Cow<'_, StatusSeries>;
}

impl CachedSeries for ClusterNavigatorToken {
    fn namespace(&self) -> &str {
        ""
    }
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn series(&self) -> Cow<'_, StatusSeries> {
        Cow::Owned(StatusSeries::of(self.status.as_ref().map(|s| &s.token)))
    }
}

/// What the per-token series of one object say, read from its status (what a cache keeps of
/// it: 56 bytes and the reason's text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusSeries {
    /// The Ready condition's reason, and whether it is True.
    ready: Option<(Box<str>, bool)>,
    /// status.nextRefreshAt, Unix seconds.
    refresh_at: Option<i64>,
    /// status.credentials.apiTokenExpiresAt, Unix seconds.
    api_token_expires_at: Option<i64>,
}

impl StatusSeries {
    /// The series of an object with this status.
    pub fn of(status: Option<&NavigatorTokenStatus>) -> Self {
        let Some(status) = status else { return StatusSeries::default() };
        let seconds = |time: Option<&str>| time?.parse::<Timestamp>().ok().map(|t| t.as_second());
        StatusSeries {
            ready: status.conditions.iter().find(|c| c.type_ == READY).map(|c| (c.reason.as_str().into(), c.status == "True")),
            refresh_at: seconds(status.next_refresh_at.as_deref()),
            api_token_expires_at: seconds(status.credentials.as_ref().and_then(|c| c.api_token_expires_at.as_deref())),
        }
    }
}

/// Tokens per chunk of per-token series.
const TOKENS_PER_CHUNK: usize = 500;

/// The sample of one token: its `reason` label, if the family has one, and the value.
type Sample<'a> = (Option<&'a str>, i64);

/// One per-token family: name, help, and the sample of one token (`None`: no series for it).
struct StatusFamily {
    name: &'static str,
    help: &'static str,
    line: fn(&StatusSeries) -> Option<Sample<'_>>,
}

const STATUS_FAMILIES: [StatusFamily; 3] = [
    StatusFamily {
        name: "navigator_token_ready",
        help: "1 when the NavigatorToken (or ClusterNavigatorToken) is Ready, else 0; reason is the Ready condition's",
        line: |s| s.ready.as_ref().map(|(reason, ready)| (Some(&**reason), i64::from(*ready))),
    },
    StatusFamily {
        name: "navigator_token_refresh_timestamp_seconds",
        help: "When the operator next requests a token for the NavigatorToken (refresh or retry), Unix seconds",
        line: |s| Some((None, s.refresh_at?)),
    },
    StatusFamily {
        name: "navigator_token_api_token_expiry_timestamp_seconds",
        help: "When the CSP API token a NavigatorToken or ClusterNavigatorToken uses expires itself (not the access token), Unix seconds; no series when it never expires or is not known",
        line: |s| Some((None, s.api_token_expires_at?)),
    },
];

/// The text of `family` for `tokens`, with its HELP and TYPE lines when `header`.
fn status_lines(family: &StatusFamily, tokens: &[Arc<dyn CachedSeries>], header: bool) -> String {
    let mut out = String::new();
    if header {
        let _ = write!(out, "# HELP {} {}\n# TYPE {} gauge\n", family.name, family.help, family.name);
    }
    for token in tokens {
        let series = token.series();
        let Some((reason, value)) = (family.line)(&series) else { continue };
        let _ = write!(out, "{}{{namespace=\"{}\",name=\"{}\"", family.name, escape(token.namespace()), escape(token.name()));
        if let Some(reason) = reason {
            let _ = write!(out, ",reason=\"{}\"", escape(reason));
        }
        let _ = writeln!(out, "}} {value}");
    }
    out
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("navigator");
        let token_expiry = Family::<TokenLabels, Gauge>::default();
        let consecutive_failures = Family::<TokenLabels, Gauge>::default();
        let token_requests = Family::<RequestLabels, Counter>::default();
        let token_request_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register("token_expiry_timestamp_seconds", "Expiry of the token held in each target Secret", token_expiry.clone());
        registry.register(
            "token_consecutive_failures",
            "Failed token requests in a row per NavigatorToken (absent while healthy)",
            consecutive_failures.clone(),
        );
        registry.register("token_requests", "Token endpoint requests by endpoint type and outcome", token_requests.clone());
        registry.register("token_request_duration_seconds", "Token endpoint request latency", token_request_duration.clone());
        registry.register("reconcile", "Reconciles by result", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Reconcile latency", reconcile_duration.clone());
        let kube_api_requests = Family::<ApiLabels, Counter>::default();
        registry.register("kube_api_requests", "Kubernetes API requests by verb and resource", kube_api_requests.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles (leads, or runs without leader election), 0 on standby",
            leader.clone(),
        );
        let statuses = Arc::new(StatusCollector::default());
        Metrics {
            registry,
            token_expiry,
            consecutive_failures,
            token_requests,
            token_request_duration,
            reconciles,
            reconcile_duration,
            kube_api_requests,
            leader,
            statuses,
        }
    }
}

impl Metrics {
    /// The text exposition, in pieces: the registry's metrics, then the per-token status
    /// series a chunk of tokens at a time, then `# EOF`. Lazy: each piece is made when taken.
    pub fn exposition(&self) -> impl Iterator<Item = String> + Send + 'static + use<> {
        let mut registry = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut registry, &self.registry);
        let registry = registry.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(registry);
        let tokens = Arc::new(self.statuses.snapshot());
        let chunks = tokens.len().div_ceil(TOKENS_PER_CHUNK).max(1);
        let status = STATUS_FAMILIES.iter().flat_map(move |family| {
            let tokens = tokens.clone();
            (0..chunks).map(move |i| {
                let slice = &tokens[(i * TOKENS_PER_CHUNK).min(tokens.len())..((i + 1) * TOKENS_PER_CHUNK).min(tokens.len())];
                status_lines(family, slice, i == 0)
            })
        });
        std::iter::once(registry).chain(status).chain(std::iter::once("# EOF\n".to_owned()))
    }

    /// The whole text exposition at once (tests, tools).
    pub fn encode(&self) -> String {
        self.exposition().collect()
    }

    /// Counts a reconcile (of either kind) that began at `started` and ended, `ok` or not; a
    /// failed one is counted by the error policy ([`Metrics::reconcile_failed`]).
    pub fn reconcile_ended(&self, started: Instant, ok: bool) {
        self.reconcile_duration.observe(started.elapsed().as_secs_f64());
        if ok {
            self.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_OK.into() }).inc();
        }
    }

    /// Counts a reconcile that failed on the Kubernetes side (the error policy's retry).
    pub fn reconcile_failed(&self) {
        self.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_ERROR.into() }).inc();
    }

    /// Records a valid token (either kind): its expiry, and no failures. Before the status
    /// write: whoever sees Ready=True finds the series of the same token.
    pub fn token_valid(&self, labels: &TokenLabels, expires_at: jiff::Timestamp) {
        self.token_expiry.get_or_create(labels).set(expires_at.as_second());
        // The failure series exists only while failing: 10,000 zeros would cost memory and scrapes.
        self.consecutive_failures.remove(labels);
    }

    /// Records a failed attempt (either kind): the failures in a row so far.
    pub fn token_failing(&self, labels: &TokenLabels, consecutive_failures: u32) {
        self.consecutive_failures.get_or_create(labels).set(i64::from(consecutive_failures));
    }

    /// Forgets a deleted NavigatorToken's series.
    pub fn forget(&self, labels: &TokenLabels) {
        self.token_expiry.remove(labels);
        self.consecutive_failures.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NavigatorToken;

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::default();
        let labels = TokenLabels { namespace: "a".into(), name: "t".into() };
        m.token_expiry.get_or_create(&labels).set(1_800_000_000);
        m.token_requests.get_or_create(&RequestLabels { endpoint_type: "CSP".into(), outcome: "success".into() }).inc();
        let text = m.encode();
        assert!(text.contains(r#"navigator_token_expiry_timestamp_seconds{namespace="a",name="t"} 1800000000"#), "{text}");
        assert!(text.contains(r#"navigator_token_requests_total{endpoint_type="CSP",outcome="success"} 1"#), "{text}");
        m.forget(&labels);
        assert!(!m.encode().contains(r#"name="t""#));
    }

    // The controller caches NavigatorTokens in its own form (`token_cache`); a kube `Store` of
    // whole ones serves here to feed the collector.
    impl CachedSeries for NavigatorToken {
        fn namespace(&self) -> &str {
            self.metadata.namespace.as_deref().unwrap_or_default()
        }
        fn name(&self) -> &str {
            self.metadata.name.as_deref().unwrap_or_default()
        }
        fn series(&self) -> Cow<'_, StatusSeries> {
            Cow::Owned(StatusSeries::of(self.status.as_ref()))
        }
    }

    #[test]
    fn ready_and_refresh_series_come_from_the_cached_status() {
        use kube::runtime::watcher::Event;
        let m = Metrics::default();
        let (store, mut writer) = kube::runtime::reflector::store::<NavigatorToken>();
        m.statuses.watch(move || store.state().into_iter().map(|t| t as Arc<dyn CachedSeries>).collect());
        let token = |name: &str, status: serde_json::Value| -> NavigatorToken {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
                "metadata": {"name": name, "namespace": "team-a"},
                "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "c"}},
                "status": status,
            }))
            .unwrap()
        };
        let condition = |status: &str, reason: &str| serde_json::json!({"type": "Ready", "status": status, "reason": reason, "message": "", "lastTransitionTime": "2026-11-29T10:00:00Z"});
        let ok = token("ok", serde_json::json!({"conditions": [condition("True", "TokenValid")], "nextRefreshAt": "2026-11-29T10:20:00Z"}));
        let bad =
            token("bad", serde_json::json!({"conditions": [condition("False", "Unauthorized")], "nextRefreshAt": "2026-11-29T10:10:00Z"}));
        let new = token("new", serde_json::json!({}));
        for event in [Event::Init, Event::InitApply(ok), Event::InitApply(bad.clone()), Event::InitApply(new), Event::InitDone] {
            writer.apply_watcher_event(&event);
        }
        let text = m.encode();
        assert!(text.contains(r#"navigator_token_ready{namespace="team-a",name="ok",reason="TokenValid"} 1"#), "{text}");
        assert!(text.contains(r#"navigator_token_ready{namespace="team-a",name="bad",reason="Unauthorized"} 0"#), "{text}");
        assert!(text.contains(r#"navigator_token_refresh_timestamp_seconds{namespace="team-a",name="ok"} 1795947600"#), "{text}");
        assert!(!text.contains(r#"name="new""#), "no series before a first status: {text}");
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1, "{text}");
        assert_eq!(text.matches("# TYPE navigator_token_ready gauge").count(), 1);
        writer.apply_watcher_event(&Event::Delete(bad));
        assert!(!m.encode().contains(r#"name="bad""#), "a deleted token's series go with it");
    }

    #[test]
    fn cluster_tokens_series_have_an_empty_namespace() {
        use kube::runtime::watcher::Event;
        let m = Metrics::default();
        let (store, mut writer) = kube::runtime::reflector::store::<ClusterNavigatorToken>();
        m.statuses.watch_cluster(store);
        let cnvt: ClusterNavigatorToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken",
            "metadata": {"name": "vendor"},
            "spec": {
                "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
                "credentialsSecretRef": {"name": "c", "namespace": "ops", "apiTokenKey": "api_token"},
                "endpoint": {"type": "CSP"},
                "target": {"secretName": "vendor-token", "namespaces": ["team-a"]},
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "TokenValid", "message": "", "lastTransitionTime": "2026-11-29T10:00:00Z"}],
                "nextRefreshAt": "2026-11-29T10:20:00Z",
                "credentials": {"apiTokenExpiresAt": "2026-12-19T10:00:00Z", "apiTokenCheckedAt": "2026-11-29T10:00:00Z"},
                "namespaces": {"selected": 1, "written": 1, "failed": 0},
            },
        }))
        .unwrap();
        for event in [Event::Init, Event::InitApply(cnvt.clone()), Event::InitDone] {
            writer.apply_watcher_event(&event);
        }
        let text = m.encode();
        assert!(text.contains(r#"navigator_token_ready{namespace="",name="vendor",reason="TokenValid"} 1"#), "{text}");
        assert!(text.contains(r#"navigator_token_refresh_timestamp_seconds{namespace="",name="vendor"} 1795947600"#), "{text}");
        assert!(text.contains(r#"navigator_token_api_token_expiry_timestamp_seconds{namespace="",name="vendor"} 1797674400"#), "{text}");
        writer.apply_watcher_event(&Event::Delete(cnvt));
        assert!(!m.encode().contains(r#"name="vendor""#), "a deleted ClusterNavigatorToken's series go with it");
    }
}
