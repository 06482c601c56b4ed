//! Every reason the operator reports, in one place: condition types, the reasons of its
//! conditions, the reasons of its Events, and the label values of its metrics. Each string is
//! defined once here and used from here, so a reason cannot drift between the status, the
//! Events, the metrics and the documentation.
//!
//! The table "Reasons" in `docs/operations.md` lists each reason with where it appears and what
//! to do about it; a test below checks that table against [`all`] both ways, and its "Where"
//! column against the lists of this module ([`READY_REASONS`], [`REQUEST_FAILURES`], ...).

// Condition types.

/// Condition type: the token in the Secret(s) is valid (the one condition every token has).
pub const READY: &str = "Ready";
/// Condition type about `spec.rolloutRestartTargets`: were they restarted for the current token.
pub const ROLLOUTS_RESTARTED: &str = "RolloutsRestarted";
/// Condition type about a CSP API token: True when it expires itself within 30 days (see
/// `controller::api_token`).
pub const CREDENTIALS_EXPIRING: &str = "CredentialsExpiring";

// Ready reasons that are not failures.

/// Ready=True: a token was issued or is current.
pub const TOKEN_VALID: &str = "TokenValid";
/// Ready=True: refreshing failed but the token in the Secret is still valid (also Ready=False
/// when the token lapsed before a refresh succeeded and no failure was recorded).
pub const REFRESH_FAILING: &str = "RefreshFailing";
/// Ready: `spec.suspend` (True while the token held is valid).
pub const SUSPENDED: &str = "Suspended";

// Failures of a token request: the reason of Ready=False, `status.lastFailure` and the Warning
// Event, and the `outcome` label of `navigator_token_requests_total` (see `TokenError::reason`).

/// The endpoint host is not on the operator's allow-list (`--allowed-endpoint-hosts`).
pub const ENDPOINT_NOT_ALLOWED: &str = "EndpointNotAllowed";
/// The endpoint URL or CA bundle cannot be used.
pub const INVALID_ENDPOINT: &str = "InvalidEndpoint";
/// HTTP 401: wrong client id or secret.
pub const UNAUTHORIZED: &str = "Unauthorized";
/// HTTP 403 from the token endpoint; also the `RolloutsRestarted` reason when patching a
/// rollout target was forbidden (RBAC).
pub const FORBIDDEN: &str = "Forbidden";
/// HTTP 404: organization or endpoint not found.
pub const NOT_FOUND: &str = "NotFound";
/// HTTP 400: the request or the credentials are invalid.
pub const BAD_REQUEST: &str = "BadRequest";
/// HTTP 429.
pub const RATE_LIMITED: &str = "RateLimited";
/// HTTP 5xx.
pub const UPSTREAM_UNAVAILABLE: &str = "UpstreamUnavailable";
/// Any other non-success HTTP status.
pub const UNEXPECTED_STATUS: &str = "UnexpectedStatus";
/// A redirect, which is never followed.
pub const REDIRECTED: &str = "Redirected";
/// No complete answer in time.
pub const TIMEOUT: &str = "Timeout";
/// The TCP connection failed.
pub const CONNECTION_FAILED: &str = "ConnectionFailed";
/// The egress proxy refused, failed or did not answer.
pub const PROXY_ERROR: &str = "ProxyError";
/// TLS failed, typically an untrusted certificate.
pub const TLS_ERROR: &str = "TLSError";
/// The connection broke mid-way.
pub const TRANSPORT_ERROR: &str = "TransportError";
/// The response exceeded the size cap.
pub const RESPONSE_TOO_LARGE: &str = "ResponseTooLarge";
/// The response is not the token JSON expected.
pub const MALFORMED_RESPONSE: &str = "MalformedResponse";
/// The response lacks the access token.
pub const MISSING_TOKEN: &str = "MissingToken";
/// The token issued is already expired (or about to).
pub const TOKEN_ALREADY_EXPIRED: &str = "TokenAlreadyExpired";
/// The token issued claims to live implausibly long.
pub const IMPLAUSIBLE_EXPIRY: &str = "ImplausibleExpiry";
/// Nothing tells when the token expires.
pub const UNKNOWN_EXPIRY: &str = "UnknownExpiry";
/// CSP rejected the API token: retried only when the credentials change.
pub const API_TOKEN_INVALID: &str = "APITokenInvalid";
/// CSP rejected the refresh token: retried only when the credentials change.
pub const REFRESH_TOKEN_INVALID: &str = "RefreshTokenInvalid";
/// The spec cannot work: a duration that does not parse, a grant the endpoint type lacks, a
/// namespace selector that does not parse, a refresh token on a ClusterNavigatorToken.
pub const INVALID_SPEC: &str = "InvalidSpec";

// Failures before or after a token request: Ready=False, `status.lastFailure` and the Warning
// Event; no token request is counted.

/// The credentials Secret is not in the cache (refined to [`CREDENTIALS_NOT_LABELLED`] when it
/// exists).
pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
/// The credentials Secret exists but lacks the label `navigator.dev/credentials=true`.
pub const CREDENTIALS_NOT_LABELLED: &str = "CredentialsNotLabelled";
/// The credentials Secret lacks a key, or a value is empty or not text.
pub const CREDENTIALS_INVALID: &str = "CredentialsInvalid";
/// A `spec.target.template` key does not compile or render.
pub const INVALID_TEMPLATE: &str = "InvalidTemplate";
/// A Secret of the target name (or of the refresh-token store) belongs to someone else.
pub const SECRET_CONFLICT: &str = "SecretConflict";
/// The target namespace is being deleted.
pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
/// A ResourceQuota leaves no room for the Secret.
pub const SECRET_QUOTA_EXCEEDED: &str = "SecretQuotaExceeded";
/// RBAC, an admission webhook or a policy denied writing the Secret.
pub const SECRET_WRITE_FORBIDDEN: &str = "SecretWriteForbidden";
/// The target Secret is marked immutable.
pub const SECRET_IMMUTABLE: &str = "SecretImmutable";
/// The API server rejected the Secret (labels, annotations, keys, or another type).
pub const SECRET_INVALID: &str = "SecretInvalid";
/// Writing the Secret failed otherwise (retried with backoff).
pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";

// Events that are not failures (the failures above are Warning Events too).

/// Normal Event: the first token was issued.
pub const ISSUED: &str = "Issued";
/// Normal Event: a token was issued after failed attempts.
pub const RECOVERED: &str = "Recovered";
/// Warning Event: the token held expired while a failure was backing off.
pub const TOKEN_EXPIRED: &str = "TokenExpired";
/// Warning Event: the endpoint granted too short a lifetime for `spec.refreshBefore`.
pub const REFRESH_BEFORE_NOT_HONOURED: &str = "RefreshBeforeNotHonoured";
/// Warning Event of the `RolloutsRestarted` reason [`FORBIDDEN`].
pub const ROLLOUT_FORBIDDEN: &str = "RolloutForbidden";
/// Warning Event of the `RolloutsRestarted` reason [`TARGET_NOT_FOUND`].
pub const ROLLOUT_TARGET_NOT_FOUND: &str = "RolloutTargetNotFound";

// Reasons of RolloutsRestarted.

/// RolloutsRestarted=True: every target was restarted for the current token.
pub const RESTARTED: &str = "Restarted";
/// RolloutsRestarted=False: a rollout target does not exist.
pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
/// RolloutsRestarted=False and its Warning Event: patching a target failed otherwise.
pub const ROLLOUT_RESTART_FAILED: &str = "RolloutRestartFailed";

// Reasons of CredentialsExpiring.

/// CredentialsExpiring=True, and its one Warning Event: the CSP API token expires within 30 days.
pub const API_TOKEN_EXPIRING_SOON: &str = "APITokenExpiringSoon";
/// CredentialsExpiring=False: the CSP API token expires later.
pub const API_TOKEN_VALID: &str = "APITokenValid";
/// CredentialsExpiring=False: the CSP API token never expires.
pub const API_TOKEN_NEVER_EXPIRES: &str = "APITokenNeverExpires";

// Reasons of the ClusterNavigatorToken only.

/// Ready=False: the credentials Secret's namespace is not one the operator reads cluster
/// credentials from (`--cluster-credentials-namespace`).
pub const CREDENTIALS_NAMESPACE_NOT_ALLOWED: &str = "CredentialsNamespaceNotAllowed";
/// Ready=False: no namespace is selected (none matches, or none exists yet).
pub const NO_NAMESPACES_SELECTED: &str = "NoNamespacesSelected";
/// Ready=True: every selected namespace holds a valid token, some an older one than the current.
pub const NAMESPACES_LAGGING: &str = "NamespacesLagging";
/// Ready=False: selected namespaces hold no valid token, for more than one reason.
pub const NAMESPACES_FAILING: &str = "NamespacesFailing";
/// Warning Event: a namespace's copy held something other than the token issued (it is rewritten).
pub const SECRET_TAMPERED: &str = "SecretTampered";

// Metric label values that are not reasons.

/// `outcome` of `navigator_token_requests_total` for a token issued (else the failure's reason).
pub const OUTCOME_SUCCESS: &str = "success";
/// `result` of `navigator_reconcile_total`: the reconcile ended as planned.
pub const RECONCILE_OK: &str = "ok";
/// `result` of `navigator_reconcile_total`: a Kubernetes API call failed; retried in 5 s.
pub const RECONCILE_ERROR: &str = "error";

// Lists.

/// Failures that wait for new credentials (`RetryClass::UntilCredentialsChange`).
pub const CREDENTIALS_REJECTED: [&str; 2] = [API_TOKEN_INVALID, REFRESH_TOKEN_INVALID];

/// Failures to write a Secret that the API server refused; a failure with one of them retries at
/// once when the target Secret is deleted.
pub const SECRET_WRITE_FAILURES: [&str; 6] =
    [NAMESPACE_TERMINATING, SECRET_QUOTA_EXCEEDED, SECRET_WRITE_FORBIDDEN, SECRET_IMMUTABLE, SECRET_INVALID, SECRET_WRITE_FAILED];

/// The failures of a token request: also the `outcome` label values of
/// `navigator_token_requests_total` besides [`OUTCOME_SUCCESS`].
pub const REQUEST_FAILURES: &[&str] = &[
    ENDPOINT_NOT_ALLOWED,
    INVALID_ENDPOINT,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    BAD_REQUEST,
    RATE_LIMITED,
    UPSTREAM_UNAVAILABLE,
    UNEXPECTED_STATUS,
    REDIRECTED,
    TIMEOUT,
    CONNECTION_FAILED,
    PROXY_ERROR,
    TLS_ERROR,
    TRANSPORT_ERROR,
    RESPONSE_TOO_LARGE,
    MALFORMED_RESPONSE,
    MISSING_TOKEN,
    TOKEN_ALREADY_EXPIRED,
    IMPLAUSIBLE_EXPIRY,
    UNKNOWN_EXPIRY,
    API_TOKEN_INVALID,
    REFRESH_TOKEN_INVALID,
    INVALID_SPEC,
];

/// The failures besides a token request's ([`REQUEST_FAILURES`]). Every failure is the reason
/// of Ready=False (when no valid token is held), of `status.lastFailure` and of one Warning Event
/// per failure episode.
pub const OTHER_FAILURES: &[&str] = &[
    CREDENTIALS_NOT_FOUND,
    CREDENTIALS_NOT_LABELLED,
    CREDENTIALS_INVALID,
    INVALID_TEMPLATE,
    SECRET_CONFLICT,
    NAMESPACE_TERMINATING,
    SECRET_QUOTA_EXCEEDED,
    SECRET_WRITE_FORBIDDEN,
    SECRET_IMMUTABLE,
    SECRET_INVALID,
    SECRET_WRITE_FAILED,
    CREDENTIALS_NAMESPACE_NOT_ALLOWED,
];

/// Reasons of Ready that are not failures.
pub const READY_REASONS: &[&str] =
    &[TOKEN_VALID, REFRESH_FAILING, SUSPENDED, NO_NAMESPACES_SELECTED, NAMESPACES_LAGGING, NAMESPACES_FAILING];

/// Reasons of the `RolloutsRestarted` condition.
pub const ROLLOUT_REASONS: &[&str] = &[RESTARTED, FORBIDDEN, TARGET_NOT_FOUND, ROLLOUT_RESTART_FAILED];

/// Reasons of the `CredentialsExpiring` condition.
pub const CREDENTIALS_EXPIRING_REASONS: &[&str] = &[API_TOKEN_EXPIRING_SOON, API_TOKEN_VALID, API_TOKEN_NEVER_EXPIRES];

/// Reasons a ClusterNavigatorToken lists per namespace in `status.namespaceFailures` (and
/// reports with one Warning Event per namespace and reason).
pub const NAMESPACE_FAILURES: &[&str] = &[
    SECRET_CONFLICT,
    INVALID_TEMPLATE,
    SECRET_QUOTA_EXCEEDED,
    SECRET_WRITE_FORBIDDEN,
    SECRET_IMMUTABLE,
    SECRET_INVALID,
    SECRET_WRITE_FAILED,
];

/// Event reasons that are not failures.
pub const EVENTS: &[&str] = &[
    ISSUED,
    RECOVERED,
    TOKEN_EXPIRED,
    REFRESH_BEFORE_NOT_HONOURED,
    ROLLOUT_FORBIDDEN,
    ROLLOUT_TARGET_NOT_FOUND,
    ROLLOUT_RESTART_FAILED,
    API_TOKEN_EXPIRING_SOON,
    SECRET_TAMPERED,
];

/// The condition types.
pub const CONDITION_TYPES: &[&str] = &[READY, ROLLOUTS_RESTARTED, CREDENTIALS_EXPIRING];

/// Metric label values that are not reasons.
pub const METRIC_LABEL_VALUES: &[&str] = &[OUTCOME_SUCCESS, RECONCILE_OK, RECONCILE_ERROR];

/// Every reason, each once: of a condition, of an Event, or an `outcome` label value (the
/// lists above, together).
pub fn all() -> std::collections::BTreeSet<&'static str> {
    let lists =
        [READY_REASONS, OTHER_FAILURES, REQUEST_FAILURES, ROLLOUT_REASONS, CREDENTIALS_EXPIRING_REASONS, NAMESPACE_FAILURES, EVENTS];
    lists.iter().flat_map(|list| list.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The heading of the reference table in docs/operations.md.
    const TABLE_HEADING: &str = "### Reasons";

    fn operations_md() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The rows of the table under [`TABLE_HEADING`]: reason → the places of its "Where" cell.
    fn documented() -> BTreeMap<String, BTreeSet<String>> {
        let doc = operations_md();
        let section =
            doc.split_once(&format!("\n{TABLE_HEADING}\n")).map(|(_, rest)| rest).expect("docs/operations.md has no Reasons table");
        let mut rows = BTreeMap::new();
        for line in section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).skip(2) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let reason = cells[0].strip_prefix('`').and_then(|c| c.strip_suffix('`')).unwrap_or_else(|| panic!("not `Reason`: {line}"));
            let places = cells.get(1).unwrap_or_else(|| panic!("no Where cell: {line}")).split(", ").map(str::to_owned).collect();
            assert!(rows.insert(reason.to_owned(), places).is_none(), "{reason} is in the table twice");
        }
        rows
    }

    /// Where the module's lists say `reason` appears, in the words of the table's "Where" column.
    fn places(reason: &str) -> BTreeSet<String> {
        let mut places = BTreeSet::new();
        let mut add = |list: &[&str], place: &str| {
            if list.contains(&reason) {
                places.insert(place.to_owned());
            }
        };
        add(READY_REASONS, READY);
        for failures in [REQUEST_FAILURES, OTHER_FAILURES] {
            add(failures, READY);
            add(failures, "Event");
        }
        add(EVENTS, "Event");
        add(REQUEST_FAILURES, "outcome");
        add(ROLLOUT_REASONS, ROLLOUTS_RESTARTED);
        add(CREDENTIALS_EXPIRING_REASONS, CREDENTIALS_EXPIRING);
        add(NAMESPACE_FAILURES, "namespaceFailures");
        places
    }

    #[test]
    fn failures_include_their_subsets_and_no_reason_is_a_type_or_label_value() {
        let all = all();
        for reason in SECRET_WRITE_FAILURES {
            assert!(OTHER_FAILURES.contains(&reason), "{reason} is a failure");
        }
        for reason in CREDENTIALS_REJECTED {
            assert!(REQUEST_FAILURES.contains(&reason), "{reason} is a request's failure");
        }
        for value in CONDITION_TYPES.iter().chain(METRIC_LABEL_VALUES) {
            assert!(!all.contains(value), "{value} is not a reason");
        }
    }

    /// The docs' Reasons table lists every reason of [`all`], no other, each with where it
    /// appears as this module's lists say: a reason added here needs a row, and a row needs a
    /// reason here.
    #[test]
    fn the_reasons_table_in_the_docs_matches_the_module() {
        let documented = documented();
        let table: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
        let all = all();
        let undocumented: Vec<&&str> = all.difference(&table).collect();
        assert!(undocumented.is_empty(), "reasons missing from the Reasons table of docs/operations.md: {undocumented:?}");
        let unknown: Vec<&&str> = table.difference(&all).collect();
        assert!(unknown.is_empty(), "the Reasons table of docs/operations.md lists reasons the operator does not have: {unknown:?}");
        for (reason, where_) in &documented {
            assert_eq!(where_, &places(reason), "the Where cell of {reason} in the Reasons table");
        }
    }

    /// The condition types and the metrics' label values are documented too.
    #[test]
    fn condition_types_and_metric_label_values_are_documented() {
        let doc = operations_md();
        for type_ in CONDITION_TYPES {
            assert!(doc.contains(&format!("`{type_}`")), "docs/operations.md does not mention the condition {type_}");
        }
        let metrics_row = |metric: &str| doc.lines().find(|l| l.starts_with(&format!("| `{metric}`"))).unwrap_or_default().to_owned();
        let requests = metrics_row("navigator_token_requests_total");
        assert!(requests.contains(&format!("`{OUTCOME_SUCCESS}`")), "{requests}");
        let reconciles = metrics_row("navigator_reconcile_total");
        for value in [RECONCILE_OK, RECONCILE_ERROR] {
            assert!(reconciles.contains(&format!("`{value}`")), "{reconciles}");
        }
    }
}
