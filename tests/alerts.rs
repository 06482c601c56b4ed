//! The alerts of deploy/components/monitoring/prometheusrule.yaml, evaluated against the series
//! a running operator exposes. For each alert a scenario drives the operator (against the API
//! server and token endpoint stand-ins) into a state where the alert must fire and one where it
//! must not, scrapes `Metrics::encode()` (the text `/metrics` serves), and evaluates the rule's
//! `expr` as written in the YAML: editing a rule changes what is checked here.
//!
//! promtool is not available here, and no maintained PromQL evaluator was found on crates.io or
//! PyPI (only parsers, such as PyPI's promql-parser), so `promql` below is a small evaluator of
//! exactly the PromQL the rules use; it rejects anything else. Its simplifications: an instant selector reads the last scrape only
//! (a series missing there is stale, as after Prometheus' staleness marker); `rate` and
//! `increase` are the reset-aware difference between the first and last sample in the window
//! (divided by their distance for `rate`), without Prometheus' extrapolation to the window's
//! edges; metric names are not kept in results. The `for:` durations are not evaluated: each
//! scenario checks the condition the alert needs to hold for that long.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use navigator_token_operator::metrics::ReconcileLabels;
use navigator_token_operator::reasons::RECONCILE_OK;
use serde_json::{Value, json};
use support::{CREDS, Harness};
use testkit::token_server::Scripted;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/components/monitoring/prometheusrule.yaml");
const EXPIRING_SOON: &str = "NavigatorTokenExpiringSoon";
const REFRESH_FAILING: &str = "NavigatorTokenRefreshFailing";
const NOT_READY: &str = "NavigatorTokenNotReady";
const OPERATOR_DOWN: &str = "NavigatorTokenOperatorDown";
const ENDPOINT_ERRORS: &str = "NavigatorTokenEndpointErrors";
const API_TOKEN_EXPIRING: &str = "NavigatorAPITokenExpiringSoon";
/// Long enough that no routine refresh falls inside a test.
const LONG: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(20);

/// Alert name -> `expr`, from the PrometheusRule.
fn rules() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(RULES).expect("read the PrometheusRule");
    let rule: Value = serde_norway::from_str(&text).expect("PrometheusRule is YAML");
    let mut out = BTreeMap::new();
    for group in rule["spec"]["groups"].as_array().expect("spec.groups") {
        for r in group["rules"].as_array().expect("rules") {
            if let Some(alert) = r["alert"].as_str() {
                let expr = r["expr"].as_str().expect("expr is a string").to_owned();
                assert!(out.insert(alert.to_owned(), expr).is_none(), "alert {alert} defined twice");
            }
        }
    }
    out
}

/// The `expr` of `alert`.
fn expr(alert: &str) -> String {
    rules().remove(alert).unwrap_or_else(|| panic!("no alert {alert} in {RULES}"))
}

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One scrape of the running operator, timestamped now.
fn scrape(h: &Harness) -> promql::Scrape {
    promql::Scrape::parse(&h.metrics.encode(), now())
}

/// The label sets for which `alert` fires, evaluated at the last scrape (or now without any).
fn firing(alert: &str, scrapes: &[promql::Scrape]) -> Vec<promql::Labels> {
    let at = scrapes.last().map_or_else(now, |s| s.at);
    let expr = expr(alert);
    match promql::eval_str(&expr, scrapes, at) {
        promql::Value::Vector(v) => v.into_iter().map(|(labels, _)| labels).collect(),
        promql::Value::Scalar(_) => panic!("{alert}: an alert expression must give a vector"),
    }
}

/// The `name` labels of the firing series of `alert`.
fn firing_names(alert: &str, scrapes: &[promql::Scrape]) -> BTreeSet<String> {
    firing(alert, scrapes).into_iter().map(|l| l.get("name").cloned().unwrap_or_default()).collect()
}

fn request_refresh(name: &str) -> Value {
    json!({"metadata": {"annotations": {"navigator.dev/refresh-requested-at": format!("{name}-{}", now())}}})
}

/// The value of `metric` for NavigatorToken `name` in the running operator, if any.
fn value(h: &Harness, metric: &str, name: &str) -> Option<f64> {
    h.series(metric, name).and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// A 429 with `Retry-After: 1`: the operator retries about once a second.
fn too_many_requests() -> Scripted {
    Scripted::Status {
        code: 429,
        body: "slow down".into(),
        content_type: "text/plain".into(),
        headers: vec![("retry-after".into(), "1".into())],
    }
}

#[test]
fn every_alert_has_a_scenario() {
    let tested: BTreeSet<&str> = [EXPIRING_SOON, REFRESH_FAILING, NOT_READY, OPERATOR_DOWN, ENDPOINT_ERRORS, API_TOKEN_EXPIRING].into();
    let defined = rules();
    assert_eq!(defined.keys().map(String::as_str).collect::<BTreeSet<_>>(), tested, "alerts in {RULES} without a scenario here");
    for (alert, expr) in &defined {
        promql::parse(expr).unwrap_or_else(|e| panic!("{alert}: outside the PromQL this test evaluates: {e}"));
    }
}

/// (a) A token expiring within 15 minutes fires only when nothing will replace it in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_soon_fires_when_a_token_near_expiry_cannot_be_refreshed() {
    // Two-minute tokens: always within the alert's 15 minutes of expiry.
    let mut h = Harness::new(Duration::from_secs(120)).await;
    h.start_operator();
    h.create_token("near", json!({})).await;
    h.wait_for_ready("near", "True", "TokenValid").await;

    // Not firing: the refresh is planned before the expiry and nothing fails.
    let healthy = scrape(&h);
    let expiry = value(&h, "navigator_token_expiry_timestamp_seconds", "near").expect("expiry series");
    let refresh = value(&h, "navigator_token_refresh_timestamp_seconds", "near").expect("refresh series");
    assert!(expiry - healthy.at < 900.0 && refresh < expiry, "precondition: inside the window, refresh planned before expiry");
    assert_eq!(firing_names(EXPIRING_SOON, &[healthy]), BTreeSet::new());

    // Firing: the endpoint fails (503) on the next refresh; the old token is still in the Secret.
    h.tokens.set_default(Some(Scripted::status(503, "text/plain", "down")));
    h.patch_token("near", request_refresh("near")).await;
    h.wait_for_ready("near", "True", "RefreshFailing").await;
    let failing = scrape(&h);
    assert_eq!(firing_names(EXPIRING_SOON, &[failing]), ["near".to_owned()].into());
    let labels = &firing(EXPIRING_SOON, &[scrape(&h)])[0];
    assert_eq!(labels.get("namespace"), Some(&h.ns), "the alert carries the NavigatorToken's namespace");
    h.finish().await;
}

/// (b) Three failed attempts in a row fire; two, or a recovery, do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_failing_fires_from_the_third_failure_in_a_row() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    // Two 503s, then normal issuing (the retries come after about 2 s and 4 s).
    h.tokens.push_response(Scripted::status(503, "text/plain", "down"));
    h.tokens.push_response(Scripted::status(503, "text/plain", "down"));
    h.create_token("flaky", json!({})).await;
    h.wait_until("two failures in a row", WAIT, || async { value(&h, "navigator_token_consecutive_failures", "flaky") == Some(2.0) }).await;
    let two = scrape(&h);
    assert!(two.has("navigator_token_consecutive_failures"), "the scrape holds the failing series");
    assert_eq!(firing_names(REFRESH_FAILING, &[two]), BTreeSet::new(), "2 failures are below the threshold");
    h.wait_for_ready("flaky", "True", "TokenValid").await;
    assert_eq!(firing_names(REFRESH_FAILING, &[scrape(&h)]), BTreeSet::new(), "recovered");

    // 429s with Retry-After: 1 until the third failure in a row.
    h.tokens.set_default(Some(too_many_requests()));
    h.patch_token("flaky", request_refresh("flaky")).await;
    h.wait_until("three failures in a row", WAIT, || async {
        value(&h, "navigator_token_consecutive_failures", "flaky").is_some_and(|n| n >= 3.0)
    })
    .await;
    assert_eq!(firing_names(REFRESH_FAILING, &[scrape(&h)]), ["flaky".to_owned()].into());
    h.finish().await;
}

/// (c) Ready=False fires; Ready=True and a suspended token do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_fires_for_a_token_without_a_valid_token_but_not_when_suspended() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("good", json!({})).await;
    h.wait_for_ready("good", "True", "TokenValid").await;
    h.create_token("paused", json!({"suspend": true})).await;
    h.wait_for_ready("paused", "False", "Suspended").await;
    let calm = scrape(&h);
    assert!(calm.has("navigator_token_ready"));
    assert_eq!(firing_names(NOT_READY, &[calm]), BTreeSet::new());

    // The endpoint no longer accepts the credentials: a new token cannot be issued.
    h.tokens.set_credentials("someone-else", "other-secret");
    h.create_token("bad", json!({"endpoint": {"type": "Navigator"}})).await;
    h.wait_for_ready("bad", "False", "Unauthorized").await;
    // "good" still holds its valid token: not firing.
    assert_eq!(h.ready("good").await, Some(("True".to_owned(), "TokenValid".to_owned())));
    assert_eq!(firing_names(NOT_READY, &[scrape(&h)]), ["bad".to_owned()].into());
    h.finish().await;
}

/// (d) Fires with no leader, or with a leader that stopped reconciling while tokens exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_down_fires_without_a_leader_or_without_reconciles() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    // As main.rs does once this replica leads (the harness runs the controllers directly).
    h.metrics.leader.set(1);
    h.create_token("one", json!({})).await;
    h.wait_for_ready("one", "True", "TokenValid").await;

    // Not firing: a leader that reconciles (a new NavigatorToken between two scrapes).
    let reconciled = || h.metrics.reconciles.get_or_create(&ReconcileLabels { result: RECONCILE_OK.into() }).get();
    let (before, reconciled_before) = (scrape(&h), reconciled());
    h.create_token("two", json!({})).await;
    h.wait_for_ready("two", "True", "TokenValid").await;
    // A reconcile is counted when it ends, just after the status write that made "two" Ready.
    h.wait_until("the reconcile of two is counted", WAIT, || async { reconciled() > reconciled_before }).await;
    let after = scrape(&h);
    assert!(after.at > before.at);
    assert_eq!(firing(OPERATOR_DOWN, &[before, after]), Vec::<promql::Labels>::new());

    // Firing: no scrape has navigator_leader 1 -- nothing scraped at all, or only a standby.
    assert_eq!(firing(OPERATOR_DOWN, &[]).len(), 1, "no target up");
    let standby = navigator_token_operator::metrics::Metrics::default();
    assert!(standby.encode().contains("navigator_leader 0"));
    assert_eq!(firing(OPERATOR_DOWN, &[promql::Scrape::parse(&standby.encode(), now())]).len(), 1, "only a standby");

    // Firing: the leader still says so but no longer reconciles (its controllers stopped), while
    // the NavigatorTokens are still known: two scrapes a known interval apart, no increase.
    h.stop_operator().await;
    let stuck = scrape(&h);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let still = scrape(&h);
    assert!(still.has("navigator_token_ready") && still.has("navigator_reconcile_total"));
    assert_eq!(firing(OPERATOR_DOWN, &[stuck, still]).len(), 1);
    h.finish().await;
}

/// (e) Fires while requests end in 429 or 5xx; successes and other failures do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_errors_fire_on_429_and_5xx_answers() {
    let mut h = Harness::new(LONG).await;
    h.start_operator();
    h.create_token("calm", json!({})).await;
    h.wait_for_ready("calm", "True", "TokenValid").await;
    let requests = |h: &Harness, outcome: &str| -> f64 {
        let s = scrape(h);
        let wanted = |l: &promql::Labels| l.get("outcome").map(String::as_str) == Some(outcome);
        s.samples("navigator_token_requests_total").filter(|(l, _)| wanted(l)).map(|(_, v)| v).sum()
    };
    let failed = |h: &Harness| -> f64 {
        let s = scrape(h);
        s.samples("navigator_token_requests_total").filter(|(l, _)| l.get("outcome").is_some_and(|o| o != "success")).map(|(_, v)| v).sum()
    };
    // Not firing: successes, then failures that are neither 429 nor 5xx (the endpoint rejects
    // the credentials), each series growing between scrapes so that it has a rate.
    let one_success = scrape(&h);
    h.patch_token("calm", request_refresh("calm")).await;
    h.wait_until("a second success", WAIT, || async { requests(&h, "success") >= 2.0 }).await;
    h.tokens.set_credentials("someone-else", "other-secret");
    h.patch_token("calm", request_refresh("calm-again")).await;
    h.wait_until("a credentials error", WAIT, || async { failed(&h) >= 1.0 }).await;
    let one_error = scrape(&h);
    h.patch_token("calm", request_refresh("calm-once-more")).await;
    h.wait_until("another credentials error", WAIT, || async { failed(&h) >= 2.0 }).await;
    let calm = [one_success, one_error, scrape(&h)];
    let other = |l: &promql::Labels| l.get("outcome").is_some_and(|o| o != "success");
    assert!(calm[1].samples("navigator_token_requests_total").any(|(l, _)| other(l)), "the calm scrapes hold other failures");
    assert_eq!(firing(ENDPOINT_ERRORS, &calm), Vec::<promql::Labels>::new());

    // Firing: 429s (Retry-After: 1), then 503s.
    h.tokens.set_credentials("testkit-client", "testkit-secret");
    h.tokens.set_default(Some(too_many_requests()));
    h.patch_token("calm", request_refresh("limited")).await;
    h.wait_until("a 429", WAIT, || async { requests(&h, "RateLimited") >= 1.0 }).await;
    let start = scrape(&h);
    h.wait_until("more 429s", WAIT, || async { requests(&h, "RateLimited") >= 3.0 }).await;
    let limited = [start, scrape(&h)];
    let outcomes = |fired: Vec<promql::Labels>| -> BTreeSet<(String, String)> {
        fired.into_iter().map(|l| (l["endpoint_type"].clone(), l["outcome"].clone())).collect()
    };
    assert_eq!(outcomes(firing(ENDPOINT_ERRORS, &limited)), [("CSP".to_owned(), "RateLimited".to_owned())].into());

    // 503s: after the first, a refresh request retries at once instead of after the backoff.
    h.tokens.set_default(Some(Scripted::status(503, "text/plain", "down")));
    h.wait_until("a 503", WAIT, || async { requests(&h, "UpstreamUnavailable") >= 1.0 }).await;
    let start = scrape(&h);
    h.patch_token("calm", request_refresh("unavailable")).await;
    h.wait_until("another 503", WAIT, || async { requests(&h, "UpstreamUnavailable") >= 2.0 }).await;
    let unavailable = [start, scrape(&h)];
    assert!(outcomes(firing(ENDPOINT_ERRORS, &unavailable)).contains(&("CSP".to_owned(), "UpstreamUnavailable".to_owned())));
    h.finish().await;
}

/// (f) and (c) for ClusterNavigatorTokens: one API token behind every tenant namespace; their
/// series have an empty namespace, and the alerts fire for them as for NavigatorTokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_expiring_and_not_ready_fire_for_cluster_tokens_too() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    const API_TOKEN: &str = "api-token-of-the-cluster-Hx7Kp2Lm9Qw4Rt6Yz8Ab";
    let mut h = Harness::new(LONG).await;
    h.tokens.add_api_token(API_TOKEN, Some(SystemTime::now() + 20 * DAY));
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "api-tokens", "labels": {"navigator.dev/credentials": "true"}},
        "stringData": {"api_token": API_TOKEN},
    }))
    .unwrap();
    h.secrets().create(&Default::default(), &secret).await.unwrap();
    let tenant = support::unique_namespace();
    h.create_namespace(&tenant, &[]).await;
    h.start_cluster_operator().await;
    let target = json!({"secretName": "vendor-token", "namespaces": [tenant]});
    let with_api_token = json!({"credentialsSecretRef": {"name": "api-tokens", "apiTokenKey": "api_token"}, "target": target});
    h.create_cluster_token("tenants", with_api_token).await;
    h.create_cluster_token("plain", json!({"target": {"secretName": "plain-token", "namespaces": [tenant]}})).await;
    // Selects only a namespace that does not exist: Ready=False, NoNamespacesSelected.
    h.create_cluster_token("nowhere", json!({"target": {"secretName": "plain-token", "namespaces": ["no-such-namespace"]}})).await;
    h.wait_until("the API token's expiry and readiness reported", WAIT, || async {
        value(&h, "navigator_token_api_token_expiry_timestamp_seconds", "tenants").is_some()
            && value(&h, "navigator_token_ready", "tenants") == Some(1.0)
            && value(&h, "navigator_token_ready", "plain") == Some(1.0)
            && value(&h, "navigator_token_ready", "nowhere") == Some(0.0)
    })
    .await;
    let scrapes = [scrape(&h)];
    let firing = firing(API_TOKEN_EXPIRING, &scrapes);
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].get("name").map(String::as_str), Some("tenants"));
    assert_eq!(firing[0].get("namespace").map(String::as_str).unwrap_or_default(), "", "{firing:?}");
    // Of this test's objects: the cluster-wide operator also sees what other tests on a shared
    // API server leave in namespaces still being deleted.
    let ours = ["tenants", "plain", "nowhere"].map(str::to_owned).into();
    let not_ready: BTreeSet<String> = firing_names(NOT_READY, &scrapes).intersection(&ours).cloned().collect();
    assert_eq!(not_ready, ["nowhere".to_owned()].into());
    h.finish().await;
}

/// (f) An API token that expires within 30 days fires; one expiring later, one that never
/// expires, and client credentials do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_expiring_fires_within_thirty_days_of_the_api_tokens_expiry() {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let mut h = Harness::new(LONG).await;
    let api_tokens = [("soon", Some(29 * DAY)), ("later", Some(31 * DAY)), ("never", None)];
    let mut data = serde_json::Map::new();
    for (name, lifetime) in api_tokens {
        let value = format!("api-token-of-{name}-Hx7Kp2Lm9Qw4Rt6Yz8Ab");
        h.tokens.add_api_token(&value, lifetime.map(|l| SystemTime::now() + l));
        data.insert(format!("{name}_api_token"), json!(value));
    }
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "api-tokens", "labels": {"navigator.dev/credentials": "true"}},
        "stringData": data,
    }))
    .unwrap();
    h.secrets().create(&Default::default(), &secret).await.unwrap();
    h.start_operator();
    for (name, _) in api_tokens {
        let spec = json!({"endpoint": {"type": "CSP"}, "credentialsSecretRef": {"name": "api-tokens", "apiTokenKey": format!("{name}_api_token")}});
        h.create_token(name, spec).await;
    }
    h.create_token("client", json!({"credentialsSecretRef": {"name": CREDS}})).await;
    for name in ["soon", "later", "never", "client"] {
        h.wait_for_ready(name, "True", "TokenValid").await;
    }
    h.wait_until("the API tokens' expiry reported", WAIT, || async {
        value(&h, "navigator_token_api_token_expiry_timestamp_seconds", "soon").is_some()
            && value(&h, "navigator_token_api_token_expiry_timestamp_seconds", "later").is_some()
    })
    .await;
    assert_eq!(value(&h, "navigator_token_api_token_expiry_timestamp_seconds", "never"), None, "no series without an expiry");
    assert_eq!(firing_names(API_TOKEN_EXPIRING, &[scrape(&h)]), ["soon".to_owned()].into());
    h.finish().await;
}

/// The evaluator itself, on hand-written exposition text.
#[test]
fn evaluator_follows_promql_semantics_on_known_input() {
    let a = promql::Scrape::parse(
        "# HELP x x\n# TYPE x counter\nx_total{k=\"a\",e=\"1\"} 8\nx_total{k=\"b\",e=\"1\"} 7\ng{k=\"a\"} 1\ng{k=\"a\",r=\"z\"} 30\n",
        100.0,
    );
    let b = promql::Scrape::parse("x_total{k=\"a\",e=\"1\"} 5\nx_total{k=\"b\",e=\"1\"} 17\ng{k=\"a\"} 1\n", 110.0);
    let scrapes = [a, b];
    let eval = |q: &str| promql::eval_str(q, &scrapes, 110.0);
    let vector = |q: &str| match eval(q) {
        promql::Value::Vector(v) => v.into_iter().map(|(l, v)| (l.into_iter().map(|(k, v)| format!("{k}={v}")).collect(), v)).collect(),
        promql::Value::Scalar(s) => vec![(Vec::new(), s)],
    };
    let l = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    // A counter reset (8 -> 5) counts the new value; no extrapolation.
    assert_eq!(vector("increase(x_total[1m])"), vec![(l(&["e=1", "k=a"]), 5.0), (l(&["e=1", "k=b"]), 10.0)]);
    assert_eq!(vector("sum by (e) (rate(x_total{k=~\"a|b\"}[1m]))"), vec![(l(&["e=1"]), 1.5)]);
    assert_eq!(vector("rate(x_total[5s])"), vec![], "one sample in the window gives no rate");
    assert_eq!(vector("x_total > 10"), vec![(l(&["e=1", "k=b"]), 17.0)]);
    assert_eq!(vector("x_total{k!=\"b\"} - time() + 2 * 3"), vec![(l(&["e=1", "k=a"]), -99.0)]);
    assert_eq!(vector("max by (k) (x_total) >= max by (k) (g)"), vec![(l(&["k=a"]), 5.0)], "a series gone from the last scrape is stale");
    assert_eq!(vector("count(x_total) > 1 and sum(g) > 5"), vec![]);
    assert_eq!(vector("absent(nothing{k=\"v\"}) or sum(g)"), vec![(l(&["k=v"]), 1.0), (l(&[]), 1.0)]);
    assert_eq!(vector("absent(g == 1)"), vec![]);
    assert!(promql::parse("x unless y").is_err() && promql::parse("x > bool 1").is_err() && promql::parse("x offset 5m").is_err());
}

/// A small evaluator of the PromQL subset the rules use (see the top of the file).
mod promql {
    use std::collections::{BTreeMap, BTreeSet};

    /// A series' labels, without the metric name.
    pub type Labels = BTreeMap<String, String>;

    /// The series of one scrape and when it was taken (Unix seconds).
    pub struct Scrape {
        pub at: f64,
        series: Vec<(String, Labels, f64)>,
    }

    impl Scrape {
        /// Parses the text exposition format (comments skipped; no timestamps on samples).
        pub fn parse(text: &str, at: f64) -> Scrape {
            let mut series = Vec::new();
            for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("bad sample line {line:?}"));
                let name = line[..name_end].to_owned();
                let mut labels = Labels::new();
                let mut rest = &line[name_end..];
                if let Some(body) = rest.strip_prefix('{') {
                    let mut chars = body.char_indices().peekable();
                    let end = loop {
                        let (i, c) = chars.next().expect("unterminated label set");
                        if c == '}' {
                            break i;
                        }
                        if c == ',' {
                            continue;
                        }
                        let key_end = body[i..].find('=').expect("label without =") + i;
                        let key = body[i..key_end].to_owned();
                        while chars.next_if(|(j, _)| *j <= key_end + 1).is_some() {}
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated label value") {
                                (_, '"') => break,
                                (_, '\\') => match chars.next().expect("escape").1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                (_, other) => value.push(other),
                            }
                        }
                        labels.insert(key, value);
                    };
                    rest = &body[end + 1..];
                }
                let value = rest.trim().split(' ').next().expect("sample value");
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
                };
                series.push((name, labels, value));
            }
            Scrape { at, series }
        }

        /// The samples of `metric`.
        pub fn samples<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
            self.series.iter().filter(move |(n, _, _)| n == metric).map(|(_, l, v)| (l, *v))
        }

        /// Whether any series of `metric` is in this scrape.
        pub fn has(&self, metric: &str) -> bool {
            self.samples(metric).next().is_some()
        }
    }

    #[derive(Debug, PartialEq)]
    pub enum Value {
        Scalar(f64),
        Vector(Vec<(Labels, f64)>),
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum Op {
        Or,
        And,
        Eq,
        Ne,
        Lt,
        Le,
        Gt,
        Ge,
        Add,
        Sub,
        Mul,
        Div,
    }

    impl Op {
        fn precedence(self) -> u8 {
            match self {
                Op::Or => 1,
                Op::And => 2,
                Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => 3,
                Op::Add | Op::Sub => 4,
                Op::Mul | Op::Div => 5,
            }
        }
        fn is_comparison(self) -> bool {
            self.precedence() == 3
        }
    }

    #[derive(Debug)]
    pub enum Matcher {
        Eq(String, String),
        Ne(String, String),
        Re(String, regex::Regex),
    }

    impl Matcher {
        fn matches(&self, labels: &Labels) -> bool {
            let get = |k: &str| labels.get(k).map_or("", String::as_str);
            match self {
                Matcher::Eq(k, v) => get(k) == v,
                Matcher::Ne(k, v) => get(k) != v,
                Matcher::Re(k, re) => re.is_match(get(k)),
            }
        }
    }

    #[derive(Debug)]
    pub enum Expr {
        Number(f64),
        Selector { name: String, matchers: Vec<Matcher>, range: Option<f64> },
        Call { func: String, args: Vec<Expr> },
        Aggregate { op: String, by: Vec<String>, arg: Box<Expr> },
        Binary { op: Op, lhs: Box<Expr>, rhs: Box<Expr> },
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Token {
        Ident(String),
        Number(f64),
        Duration(f64),
        Str(String),
        Punct(&'static str),
    }

    fn lex(text: &str) -> Result<Vec<Token>, String> {
        const PUNCT: [&str; 17] = ["==", "!=", "<=", ">=", "=~", "!~", "<", ">", "=", "+", "-", "*", "/", "(", ")", ",", "{"];
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c.is_whitespace() {
                rest = &rest[c.len_utf8()..];
            } else if c.is_ascii_alphabetic() || c == '_' {
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
                out.push(Token::Ident(rest[..end].to_owned()));
                rest = &rest[end..];
            } else if c.is_ascii_digit() {
                let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
                let number: f64 = rest[..end].parse().map_err(|_| format!("bad number in {rest:?}"))?;
                let unit_end = rest[end..].find(|c: char| !c.is_ascii_alphabetic()).map_or(rest.len(), |u| u + end);
                let unit = match &rest[end..unit_end] {
                    "" => None,
                    "s" => Some(1.0),
                    "m" => Some(60.0),
                    "h" => Some(3600.0),
                    "d" => Some(86400.0),
                    other => return Err(format!("unsupported duration unit {other:?}")),
                };
                out.push(unit.map_or(Token::Number(number), |u| Token::Duration(number * u)));
                rest = &rest[unit_end..];
            } else if c == '"' {
                let end = rest[1..].find('"').ok_or("unterminated string")? + 1;
                let s = &rest[1..end];
                if s.contains('\\') {
                    return Err("escapes in strings are not supported".into());
                }
                out.push(Token::Str(s.to_owned()));
                rest = &rest[end + 1..];
            } else if let Some(p) = PUNCT.iter().chain(&["}", "[", "]"]).find(|p| rest.starts_with(**p)) {
                out.push(Token::Punct(p));
                rest = &rest[p.len()..];
            } else {
                return Err(format!("unexpected {c:?}"));
            }
        }
        Ok(out)
    }

    struct Parser {
        tokens: Vec<Token>,
        pos: usize,
    }

    const AGGREGATIONS: [&str; 4] = ["sum", "max", "min", "count"];
    const FUNCTIONS: [&str; 4] = ["time", "absent", "rate", "increase"];

    impl Parser {
        fn peek(&self) -> Option<&Token> {
            self.tokens.get(self.pos)
        }
        fn next(&mut self) -> Result<Token, String> {
            let t = self.tokens.get(self.pos).cloned().ok_or("unexpected end")?;
            self.pos += 1;
            Ok(t)
        }
        fn expect(&mut self, p: &str) -> Result<(), String> {
            match self.next()? {
                Token::Punct(q) if q == p => Ok(()),
                other => Err(format!("expected {p:?}, got {other:?}")),
            }
        }
        fn eat(&mut self, p: &str) -> bool {
            let hit = matches!(self.peek(), Some(Token::Punct(q)) if *q == p);
            self.pos += usize::from(hit);
            hit
        }
        fn binary_op(&self) -> Option<Op> {
            Some(match self.peek()? {
                Token::Ident(w) if w == "or" => Op::Or,
                Token::Ident(w) if w == "and" => Op::And,
                Token::Punct("==") => Op::Eq,
                Token::Punct("!=") => Op::Ne,
                Token::Punct("<") => Op::Lt,
                Token::Punct("<=") => Op::Le,
                Token::Punct(">") => Op::Gt,
                Token::Punct(">=") => Op::Ge,
                Token::Punct("+") => Op::Add,
                Token::Punct("-") => Op::Sub,
                Token::Punct("*") => Op::Mul,
                Token::Punct("/") => Op::Div,
                _ => return None,
            })
        }
        /// Precedence climbing; all supported operators are left-associative.
        fn expr(&mut self, min: u8) -> Result<Expr, String> {
            let mut lhs = self.primary()?;
            while let Some(op) = self.binary_op().filter(|op| op.precedence() >= min) {
                self.pos += 1;
                if let Some(Token::Ident(w)) = self.peek()
                    && ["bool", "on", "ignoring", "group_left", "group_right"].contains(&w.as_str())
                {
                    return Err(format!("modifier {w} is not supported"));
                }
                let rhs = self.expr(op.precedence() + 1)?;
                lhs = Expr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
            }
            Ok(lhs)
        }
        fn labels_list(&mut self) -> Result<Vec<String>, String> {
            self.expect("(")?;
            let mut out = Vec::new();
            while !self.eat(")") {
                match self.next()? {
                    Token::Ident(l) => out.push(l),
                    other => return Err(format!("expected a label name, got {other:?}")),
                }
                self.eat(",");
            }
            Ok(out)
        }
        fn primary(&mut self) -> Result<Expr, String> {
            match self.next()? {
                Token::Punct("(") => {
                    let e = self.expr(1)?;
                    self.expect(")")?;
                    Ok(e)
                }
                Token::Number(n) => Ok(Expr::Number(n)),
                Token::Ident(word) if AGGREGATIONS.contains(&word.as_str()) => {
                    let mut by = None;
                    if matches!(self.peek(), Some(Token::Ident(w)) if w == "by") {
                        self.pos += 1;
                        by = Some(self.labels_list()?);
                    }
                    self.expect("(")?;
                    let arg = self.expr(1)?;
                    self.expect(")")?;
                    if matches!(self.peek(), Some(Token::Ident(w)) if w == "by") {
                        self.pos += 1;
                        by = Some(self.labels_list()?);
                    }
                    Ok(Expr::Aggregate { op: word, by: by.unwrap_or_default(), arg: Box::new(arg) })
                }
                Token::Ident(word) if FUNCTIONS.contains(&word.as_str()) => {
                    self.expect("(")?;
                    let mut args = Vec::new();
                    while !self.eat(")") {
                        args.push(self.expr(1)?);
                        self.eat(",");
                    }
                    let arity = usize::from(word != "time");
                    if args.len() != arity {
                        return Err(format!("{word} takes {arity} argument(s)"));
                    }
                    let wants_range = word == "rate" || word == "increase";
                    let has_range = matches!(args.first(), Some(Expr::Selector { range: Some(_), .. }));
                    if wants_range != has_range {
                        return Err(format!("{word}: range selector argument expected only for rate/increase"));
                    }
                    Ok(Expr::Call { func: word, args })
                }
                Token::Ident(word) if ["by", "without", "unless", "offset", "bool", "on", "ignoring"].contains(&word.as_str()) => {
                    Err(format!("{word} is not supported here"))
                }
                Token::Ident(name) => {
                    if self.peek() == Some(&Token::Punct("(")) {
                        return Err(format!("function {name} is not supported"));
                    }
                    let mut matchers = Vec::new();
                    if self.eat("{") {
                        while !self.eat("}") {
                            let Token::Ident(label) = self.next()? else { return Err("expected a label name".into()) };
                            let op = self.next()?;
                            let Token::Str(value) = self.next()? else { return Err("expected a quoted label value".into()) };
                            matchers.push(match op {
                                Token::Punct("=") => Matcher::Eq(label, value),
                                Token::Punct("!=") => Matcher::Ne(label, value),
                                Token::Punct("=~") => {
                                    let re = regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| e.to_string())?;
                                    Matcher::Re(label, re)
                                }
                                other => return Err(format!("matcher {other:?} is not supported")),
                            });
                            self.eat(",");
                        }
                    }
                    let mut range = None;
                    if self.eat("[") {
                        let Token::Duration(d) = self.next()? else { return Err("expected a duration".into()) };
                        self.expect("]")?;
                        range = Some(d);
                    }
                    if matches!(self.peek(), Some(Token::Ident(w)) if w == "offset") {
                        return Err("offset is not supported".into());
                    }
                    Ok(Expr::Selector { name, matchers, range })
                }
                other => Err(format!("unexpected {other:?}")),
            }
        }
    }

    /// Parses `text`, or says what is outside the supported subset.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut p = Parser { tokens: lex(text)?, pos: 0 };
        let e = p.expr(1)?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t:?} after the expression")),
        }
    }

    /// Parses and evaluates `text` at time `at` over `scrapes` (in time order).
    pub fn eval_str(text: &str, scrapes: &[Scrape], at: f64) -> Value {
        let e = parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
        eval(&e, scrapes, at)
    }

    fn select<'a>(scrape: &'a Scrape, name: &'a str, matchers: &'a [Matcher]) -> impl Iterator<Item = (&'a Labels, f64)> + 'a {
        scrape.samples(name).filter(move |(l, _)| matchers.iter().all(|m| m.matches(l)))
    }

    fn eval(e: &Expr, scrapes: &[Scrape], at: f64) -> Value {
        match e {
            Expr::Number(n) => Value::Scalar(*n),
            Expr::Selector { name, matchers, range: None } => {
                Value::Vector(scrapes.last().map(|s| select(s, name, matchers).map(|(l, v)| (l.clone(), v)).collect()).unwrap_or_default())
            }
            Expr::Selector { range: Some(_), .. } => panic!("a range selector outside rate/increase"),
            Expr::Call { func, args } => match func.as_str() {
                "time" => Value::Scalar(at),
                "absent" => {
                    let Value::Vector(v) = eval(&args[0], scrapes, at) else { panic!("absent() of a scalar") };
                    if !v.is_empty() {
                        return Value::Vector(Vec::new());
                    }
                    // Like Prometheus: the labels of the argument's equality matchers, if a selector.
                    let labels = match &args[0] {
                        Expr::Selector { matchers, .. } => matchers
                            .iter()
                            .filter_map(|m| match m {
                                Matcher::Eq(k, v) => Some((k.clone(), v.clone())),
                                _ => None,
                            })
                            .collect(),
                        _ => Labels::new(),
                    };
                    Value::Vector(vec![(labels, 1.0)])
                }
                _ => {
                    let Expr::Selector { name, matchers, range: Some(range) } = &args[0] else { unreachable!("checked by the parser") };
                    let mut samples: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
                    for s in scrapes.iter().filter(|s| s.at > at - range && s.at <= at) {
                        for (l, v) in select(s, name, matchers) {
                            samples.entry(l.clone()).or_default().push((s.at, v));
                        }
                    }
                    let out = samples
                        .into_iter()
                        .filter(|(_, points)| points.len() >= 2)
                        .map(|(l, points)| {
                            let increase: f64 = points.windows(2).map(|w| if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 }).sum();
                            let span = points[points.len() - 1].0 - points[0].0;
                            (l, if func == "rate" { increase / span } else { increase })
                        })
                        .collect();
                    Value::Vector(out)
                }
            },
            Expr::Aggregate { op, by, arg } => {
                let Value::Vector(v) = eval(arg, scrapes, at) else { panic!("{op}() of a scalar") };
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for (l, x) in v {
                    let key = l.into_iter().filter(|(k, _)| by.contains(k)).collect();
                    groups.entry(key).or_default().push(x);
                }
                let fold = |xs: Vec<f64>| match op.as_str() {
                    "sum" => xs.iter().sum(),
                    "max" => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    "min" => xs.iter().copied().fold(f64::INFINITY, f64::min),
                    _ => xs.len() as f64,
                };
                Value::Vector(groups.into_iter().map(|(l, xs)| (l, fold(xs))).collect())
            }
            Expr::Binary { op, lhs, rhs } => binary(*op, eval(lhs, scrapes, at), eval(rhs, scrapes, at)),
        }
    }

    fn apply(op: Op, a: f64, b: f64) -> Option<f64> {
        let keep = |c: bool| c.then_some(a);
        match op {
            Op::Add => Some(a + b),
            Op::Sub => Some(a - b),
            Op::Mul => Some(a * b),
            Op::Div => Some(a / b),
            Op::Eq => keep(a == b),
            Op::Ne => keep(a != b),
            Op::Lt => keep(a < b),
            Op::Le => keep(a <= b),
            Op::Gt => keep(a > b),
            Op::Ge => keep(a >= b),
            Op::Or | Op::And => unreachable!("set operators are handled apart"),
        }
    }

    fn binary(op: Op, lhs: Value, rhs: Value) -> Value {
        match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(b)) => {
                assert!(!op.is_comparison(), "comparing two scalars needs `bool`, which is not supported");
                Value::Scalar(apply(op, a, b).expect("arithmetic"))
            }
            (Value::Vector(v), Value::Scalar(b)) => {
                assert!(!matches!(op, Op::Or | Op::And), "set operator with a scalar");
                Value::Vector(v.into_iter().filter_map(|(l, a)| Some((l, apply(op, a, b)?))).collect())
            }
            (Value::Scalar(a), Value::Vector(v)) => {
                assert!(!matches!(op, Op::Or | Op::And), "set operator with a scalar");
                // A comparison keeps the vector's value (the sample is the vector's).
                Value::Vector(
                    v.into_iter()
                        .filter_map(|(l, b)| {
                            let r = apply(op, a, b)?;
                            Some((l, if op.is_comparison() { b } else { r }))
                        })
                        .collect(),
                )
            }
            (Value::Vector(a), Value::Vector(b)) => {
                let right: BTreeMap<Labels, f64> = b.into_iter().collect();
                match op {
                    Op::And => Value::Vector(a.into_iter().filter(|(l, _)| right.contains_key(l)).collect()),
                    Op::Or => {
                        let left: BTreeSet<Labels> = a.iter().map(|(l, _)| l.clone()).collect();
                        let mut out = a;
                        out.extend(right.into_iter().filter(|(l, _)| !left.contains(l)));
                        Value::Vector(out)
                    }
                    // One-to-one matching on all labels.
                    _ => Value::Vector(a.into_iter().filter_map(|(l, x)| Some((l.clone(), apply(op, x, *right.get(&l)?)?))).collect()),
                }
            }
        }
    }
}
