//! Prometheus metrics (prometheus-client), served on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api_counter::ApiLabels;

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
        Metrics {
            registry,
            token_expiry,
            consecutive_failures,
            token_requests,
            token_request_duration,
            reconciles,
            reconcile_duration,
            kube_api_requests,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
}
