//! Counts the operator's own Kubernetes API requests by verb and resource: a metric in
//! production, and what tests and the benchmark assert API cost with (against any API server).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Labels of the API request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// get, list, watch, create, update, patch, delete.
    pub verb: String,
    /// Plural resource, with `/status` for the status subresource.
    pub resource: String,
}

/// Request counts by (verb, resource).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiCounts(pub BTreeMap<(String, String), u64>);

impl ApiCounts {
    /// Requests of one verb on one resource.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.0.get(&(verb.to_owned(), resource.to_owned())).copied().unwrap_or(0)
    }

    /// Requests of one verb on any resource.
    pub fn verb(&self, verb: &str) -> u64 {
        self.0.iter().filter(|((v, _), _)| v == verb).map(|(_, n)| n).sum()
    }

    /// Writes: create, update, patch, delete.
    pub fn writes(&self) -> u64 {
        ["create", "update", "patch", "delete"].iter().map(|v| self.verb(v)).sum()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &ApiCounts) -> ApiCounts {
        let mut out = self.0.clone();
        for (key, n) in out.iter_mut() {
            *n -= earlier.0.get(key).copied().unwrap_or(0).min(*n);
        }
        out.retain(|_, n| *n > 0);
        ApiCounts(out)
    }
}

/// Shared counter fed by [`layer`].
#[derive(Clone, Default)]
pub struct ApiCounter {
    counts: Arc<Mutex<ApiCounts>>,
    metric: Family<ApiLabels, Counter>,
}

impl ApiCounter {
    /// A counter that also feeds `metric`.
    pub fn new(metric: Family<ApiLabels, Counter>) -> Self {
        ApiCounter { counts: Arc::default(), metric }
    }

    /// Counts one request.
    pub fn record(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = classify(method, uri);
        self.metric.get_or_create(&ApiLabels { verb: verb.into(), resource: resource.clone() }).inc();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.0.entry((verb.to_owned(), resource)).or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> ApiCounts {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Builds a kube client whose every request is counted.
pub fn client(config: kube::Config, counter: ApiCounter) -> Result<kube::Client, kube::Error> {
    let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        counter.record(request.method(), request.uri());
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&layer).build())
}

/// (verb, resource) of a REST request, e.g. ("patch", "navigatortokens/status").
pub fn classify(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/group/version/...
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &segments[..],
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() >= 3 { &rest[2..] } else { rest };
    let resource = match rest {
        [plural, _name, sub, ..] => format!("{plural}/{sub}"),
        [plural, ..] => (*plural).to_owned(),
        [] => String::new(),
    };
    let named = rest.len() >= 2;
    let watch = uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: http::Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn classifies_rest_calls() {
        assert_eq!(c(http::Method::GET, "/api/v1/namespaces/a/secrets?labelSelector=x&limit=500"), ("list", "secrets".into()));
        assert_eq!(c(http::Method::GET, "/api/v1/secrets?watch=true&resourceVersion=5"), ("watch", "secrets".into()));
        assert_eq!(c(http::Method::GET, "/api/v1/namespaces/a/secrets/s"), ("get", "secrets".into()));
        assert_eq!(
            c(http::Method::PATCH, "/apis/navigator.dev/v1alpha1/namespaces/a/navigatortokens/t/status?fieldManager=x"),
            ("patch", "navigatortokens/status".into())
        );
        assert_eq!(c(http::Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"), ("create", "events".into()));
        assert_eq!(c(http::Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"), ("update", "leases".into()));
        assert_eq!(c(http::Method::GET, "/api/v1/namespaces/a"), ("get", "namespaces".into()));
    }

    #[test]
    fn counts_and_differences() {
        let counter = ApiCounter::default();
        let before = counter.snapshot();
        counter.record(&http::Method::PATCH, &"/api/v1/namespaces/a/secrets/s".parse().unwrap());
        counter.record(&http::Method::GET, &"/api/v1/namespaces/a/secrets/s".parse().unwrap());
        let delta = counter.snapshot().since(&before);
        assert_eq!((delta.writes(), delta.verb("get"), delta.total()), (1, 1, 2));
    }
}
