//! The ClusterNavigatorToken's own decisions, free of I/O: which namespaces are selected, which
//! token the shared plan (`controller::plan::decide`) should look at, what each namespace needs,
//! and what Ready says. The token itself is decided by the same plan as a NavigatorToken's.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use crate::controller::plan::{CurrentToken, TargetSecret};
use crate::controller::secret::TokenTimes;
use crate::crd::cluster::{ClusterTarget, NamespaceCounts, NamespaceFailure};
use crate::reasons::{NAMESPACES_FAILING, NAMESPACES_LAGGING, NO_NAMESPACES_SELECTED, TOKEN_VALID};

/// How many namespace failures status lists.
pub const MAX_LISTED_FAILURES: usize = 5;

/// What the metadata watch tells about a Namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// deletionTimestamp is set: it is being deleted.
    pub terminating: bool,
}

/// The namespaces a target selects, sorted: those named in `namespaces` and those whose labels
/// match `namespaceSelector`, if they exist and are not being deleted. An error when the
/// selector does not parse (the message says why).
pub fn selected_namespaces(target: &ClusterTarget, namespaces: &[NamespaceInfo]) -> Result<BTreeSet<String>, String> {
    let selector: Option<Selector> = match &target.namespace_selector {
        Some(s) => Some(s.clone().try_into().map_err(|e| format!("spec.target.namespaceSelector: {e}"))?),
        None => None,
    };
    let named: BTreeSet<&str> = target.namespaces.iter().map(String::as_str).collect();
    let chosen = namespaces
        .iter()
        .filter(|ns| !ns.terminating)
        .filter(|ns| named.contains(ns.name.as_str()) || selector.as_ref().is_some_and(|selector| selector.matches(&ns.labels)));
    Ok(chosen.map(|ns| ns.name.clone()).collect())
}

/// The namespaces `spec.target.namespaces` names that do not exist, sorted.
pub fn missing_namespaces(target: &ClusterTarget, namespaces: &[NamespaceInfo]) -> Vec<String> {
    let existing: BTreeSet<&str> = namespaces.iter().map(|ns| ns.name.as_str()).collect();
    let named: BTreeSet<&String> = target.namespaces.iter().filter(|name| !existing.contains(name.as_str())).collect();
    named.into_iter().cloned().collect()
}

/// The token the plan decides on: the one this object issued last, as the operator trusts it
/// (`trusted`: its times, and whether it was issued from the current inputs), from memory or the
/// store, never from a namespace's copy, which its tenant can write. Without one, a Secret of
/// ours anywhere means the plan asks for a new token (Drift), none means the first (Initial).
pub fn shared_token(namespaces: &[(String, TargetSecret)], trusted: Option<(TokenTimes, bool)>) -> TargetSecret {
    match trusted {
        Some((times, inputs_current)) => TargetSecret::Managed(Some(CurrentToken {
            issued_at: times.issued_at,
            expires_at: times.expires_at,
            intact: true,
            inputs_current,
            // Per-namespace rewrites are this module's business, not the plan's.
            template_current: true,
        })),
        None if namespaces.iter().any(|(_, s)| matches!(s, TargetSecret::Managed(_))) => TargetSecret::Managed(None),
        None => TargetSecret::Absent,
    }
}

/// Checks one namespace's copy against the trusted token `current`. A copy that claims that
/// token (or a newer one, which the operator never issued) counts as intact only when its data
/// is exactly what the operator writes (`holds_current`: a fingerprint of the data itself,
/// which no annotation can fake). Returns the state, corrected, and whether the copy was
/// tampered with: it claims the current token (rendered with the current template) or a newer
/// one but holds something else, or its data was edited after the operator wrote it.
pub fn verify_copy(
    state: TargetSecret,
    current: TokenTimes,
    holds_current: impl FnOnce() -> bool,
    data_edited: bool,
) -> (TargetSecret, bool) {
    let TargetSecret::Managed(Some(mut copy)) = state else { return (state, false) };
    let tampered = if copy.issued_at == current.issued_at && copy.expires_at == current.expires_at {
        copy.intact = holds_current();
        // A copy rendered with an older template differs for a good reason: it is rewritten.
        !copy.intact && (copy.template_current || data_edited)
    } else if copy.issued_at > current.issued_at || copy.expires_at > current.expires_at {
        copy.intact = false;
        true
    } else {
        // An older token of ours, lagging: valid until its expiry unless edited.
        copy.intact &= !data_edited;
        data_edited
    };
    (TargetSecret::Managed(Some(copy)), tampered)
}

/// What one selected namespace needs, given the current token's times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceNeed {
    /// It holds the current token as the spec wants it.
    Current,
    /// No Secret of ours in the cache: look (one GET) whether a foreign one is there, then write.
    CheckThenWrite,
    /// Ours, but an older token, edited, or its template changed: write.
    Write,
    /// Someone else's Secret (another ClusterNavigatorToken's or a NavigatorToken's): never touched.
    Conflict,
}

/// What namespace `state` needs so that it holds the token of `current`.
pub fn namespace_need(state: &TargetSecret, current: TokenTimes) -> NamespaceNeed {
    match state {
        TargetSecret::Absent => NamespaceNeed::CheckThenWrite,
        TargetSecret::Foreign => NamespaceNeed::Conflict,
        TargetSecret::Managed(Some(c))
            if c.intact
                && c.inputs_current
                && c.template_current
                && c.issued_at == current.issued_at
                && c.expires_at == current.expires_at =>
        {
            NamespaceNeed::Current
        }
        TargetSecret::Managed(_) => NamespaceNeed::Write,
    }
}

/// How one selected namespace ended up after a reconcile.
#[derive(Clone, Debug, PartialEq)]
pub enum NamespaceOutcome {
    /// It holds the current token.
    Current,
    /// It holds an older token of ours, still valid until the given time (a write is pending or
    /// failed, or there is no current token to write).
    Lagging(Timestamp),
    /// It holds no valid token of ours; nothing failed there (no token to write yet).
    Missing,
    /// Its Secret could not be written: reason, message, and until when an older token of ours
    /// in it stays valid.
    Failed(String, String, Option<Timestamp>),
}

/// Counts, listed failures and the Ready verdict over all selected namespaces.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Selected, written (current token), failed.
    pub counts: NamespaceCounts,
    /// The first [`MAX_LISTED_FAILURES`] failures, by namespace name.
    pub failures: Vec<NamespaceFailure>,
    /// The first [`MAX_LISTED_FAILURES`] namespaces the spec names that do not exist.
    pub missing: Vec<String>,
    /// Ready's status, reason and message, as far as the namespaces go.
    pub ready: (bool, String, String),
}

/// Sums up the namespaces: Ready is True while every selected namespace holds a valid token
/// (`TokenValid` when all hold the current one, `NamespacesLagging` saying how many do not),
/// False when one holds none (its failure's reason, or `NamespacesFailing` for several).
/// Namespaces the spec names that do not exist (`missing`, sorted) are counted and listed, and
/// named in the message when nothing is selected; no failure: they may be created later.
pub fn summarize(
    outcomes: &BTreeMap<String, NamespaceOutcome>,
    missing: &[String],
    secret: &str,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Summary {
    let selected = outcomes.len() as u32;
    let written = outcomes.values().filter(|o| **o == NamespaceOutcome::Current).count() as u32;
    let failed_list: Vec<NamespaceFailure> = outcomes
        .iter()
        .filter_map(|(ns, o)| match o {
            NamespaceOutcome::Failed(reason, message, _) => {
                Some(NamespaceFailure { namespace: ns.clone(), reason: reason.clone(), message: message.clone() })
            }
            _ => None,
        })
        .collect();
    let counts = NamespaceCounts { selected, written, failed: failed_list.len() as u32, missing: missing.len() as u32 };
    let without_token: Vec<&String> = outcomes
        .iter()
        .filter(|(_, o)| match o {
            NamespaceOutcome::Current => expires_at.is_none_or(|e| e <= now),
            NamespaceOutcome::Lagging(until) | NamespaceOutcome::Failed(_, _, Some(until)) => *until <= now,
            NamespaceOutcome::Missing | NamespaceOutcome::Failed(_, _, None) => true,
        })
        .map(|(ns, _)| ns)
        .collect();
    let expiry = expires_at.map(crate::controller::status::rfc3339).unwrap_or_default();
    let ready = if selected == 0 {
        let mut message = "no namespace matches spec.target.namespaceSelector or spec.target.namespaces".to_owned();
        if !missing.is_empty() {
            message.push_str(&format!("; spec.target.namespaces names {} that do not exist ({})", missing.len(), first_few(missing)));
        }
        (false, NO_NAMESPACES_SELECTED.to_owned(), message)
    } else if without_token.is_empty() && written == selected {
        (true, TOKEN_VALID.to_owned(), format!("Secret {secret} holds a token valid until {expiry} in all {selected} selected namespaces"))
    } else if without_token.is_empty() {
        let lagging = selected - written;
        (
            true,
            NAMESPACES_LAGGING.to_owned(),
            format!(
                "{lagging} of {selected} namespaces lag behind the current token (valid until {expiry}) but still hold a valid one{}",
                listed(&failed_list)
            ),
        )
    } else {
        let reasons: BTreeSet<&str> = failed_list.iter().map(|f| f.reason.as_str()).collect();
        let reason = match reasons.iter().next() {
            Some(only) if reasons.len() == 1 && failed_list.len() == without_token.len() => (*only).to_owned(),
            _ => NAMESPACES_FAILING.to_owned(),
        };
        let message = format!(
            "{} of {selected} namespaces hold no valid token in Secret {secret} ({}){}",
            without_token.len(),
            first_few(&without_token),
            listed(&failed_list)
        );
        (false, reason, message)
    };
    let failures = failed_list.into_iter().take(MAX_LISTED_FAILURES).collect();
    Summary { counts, failures, missing: missing.iter().take(MAX_LISTED_FAILURES).cloned().collect(), ready }
}

/// "a, b, c" for the first few names, then ", ..." when there are more.
fn first_few(names: &[impl AsRef<str>]) -> String {
    let shown: Vec<&str> = names.iter().take(MAX_LISTED_FAILURES).map(AsRef::as_ref).collect();
    let more = if names.len() > shown.len() { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// "; namespace a: Reason, namespace b: Reason" for the first few failures.
fn listed(failures: &[NamespaceFailure]) -> String {
    let parts: Vec<String> = failures.iter().take(MAX_LISTED_FAILURES).map(|f| format!("{}: {}", f.namespace, f.reason)).collect();
    if parts.is_empty() { String::new() } else { format!("; failing: {}", parts.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ns(name: &str, labels: &[(&str, &str)], terminating: bool) -> NamespaceInfo {
        NamespaceInfo { name: name.into(), labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(), terminating }
    }

    fn token(issued: &str, expires: &str) -> CurrentToken {
        CurrentToken { issued_at: at(issued), expires_at: at(expires), intact: true, inputs_current: true, template_current: true }
    }

    fn times(issued: &str, expires: &str) -> TokenTimes {
        TokenTimes { issued_at: at(issued), expires_at: at(expires) }
    }

    #[test]
    fn selection_joins_names_and_labels_and_skips_terminating_namespaces() {
        let target: ClusterTarget = serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchLabels": {"tenant": "yes"}},
            "namespaces": ["named", "missing"],
        }))
        .unwrap();
        let all = [
            ns("a", &[("tenant", "yes")], false),
            ns("b", &[("tenant", "no")], false),
            ns("named", &[], false),
            ns("leaving", &[("tenant", "yes")], true),
        ];
        let chosen: Vec<String> = selected_namespaces(&target, &all).unwrap().into_iter().collect();
        assert_eq!(chosen, ["a", "named"]);
        assert_eq!(missing_namespaces(&target, &all), ["missing"]);
        let bad: ClusterTarget =
            serde_json::from_value(serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "Bogus"}]}}))
                .unwrap();
        assert!(selected_namespaces(&bad, &all).unwrap_err().contains("namespaceSelector"));
    }

    #[test]
    fn the_shared_token_is_the_trusted_one_whatever_the_copies_claim() {
        let forged = token("2026-11-29T10:20:00Z", "2100-01-01T00:00:00Z");
        let states = vec![
            ("a".to_owned(), TargetSecret::Managed(Some(forged))),
            ("c".to_owned(), TargetSecret::Foreign),
            ("d".to_owned(), TargetSecret::Absent),
        ];
        let trusted = times("2026-11-29T10:00:00Z", "2026-11-29T10:30:00Z");
        let TargetSecret::Managed(Some(shared)) = shared_token(&states, Some((trusted, true))) else { panic!() };
        assert_eq!((shared.issued_at, shared.expires_at), (trusted.issued_at, trusted.expires_at));
        assert!(shared.intact && shared.inputs_current);
        let TargetSecret::Managed(Some(stale)) = shared_token(&states, Some((trusted, false))) else { panic!() };
        assert!(!stale.inputs_current, "issued from other inputs: the plan asks for a new token");
        // Nothing trusted (memory and store lost): a copy claiming a token does not count.
        assert_eq!(shared_token(&states, None), TargetSecret::Managed(None));
        assert_eq!(shared_token(&states[1..], None), TargetSecret::Absent);
    }

    #[test]
    fn a_copy_counts_only_when_its_data_is_the_trusted_tokens() {
        let current = times("2026-11-29T10:20:00Z", "2026-11-29T10:50:00Z");
        let claims = |c: CurrentToken| TargetSecret::Managed(Some(c));
        let same = token("2026-11-29T10:20:00Z", "2026-11-29T10:50:00Z");
        assert_eq!(verify_copy(claims(same.clone()), current, || true, false), (claims(same.clone()), false));
        // Consistent annotations, other data: tampered, not intact, so it is rewritten.
        let (state, tampered) = verify_copy(claims(same.clone()), current, || false, false);
        assert!(tampered && state.valid_token(at("2026-11-29T10:25:00Z")).is_none());
        assert_eq!(namespace_need(&state, current), NamespaceNeed::Write);
        // Rendered with an older template: rewritten, but nobody tampered with it.
        let retemplated = CurrentToken { template_current: false, ..same };
        assert!(!verify_copy(claims(retemplated), current, || false, false).1);
        // A newer token than the operator issued, expiring in 2100: forged.
        let (state, tampered) = verify_copy(claims(token("2026-11-29T10:40:00Z", "2100-01-01T00:00:00Z")), current, || true, false);
        assert!(tampered && state.valid_token(at("2026-11-29T10:25:00Z")).is_none());
        // An older token lags, valid until it expires, unless its data was edited.
        let older = token("2026-11-29T10:00:00Z", "2026-11-29T10:30:00Z");
        let (state, tampered) = verify_copy(claims(older.clone()), current, || false, false);
        assert!(!tampered && state.valid_token(at("2026-11-29T10:25:00Z")).is_some());
        let (state, tampered) = verify_copy(claims(older), current, || false, true);
        assert!(tampered && state.valid_token(at("2026-11-29T10:25:00Z")).is_none());
        assert_eq!(verify_copy(TargetSecret::Absent, current, || true, false), (TargetSecret::Absent, false));
    }

    #[test]
    fn each_namespace_needs_only_what_it_lacks() {
        let current = times("2026-11-29T10:20:00Z", "2026-11-29T10:50:00Z");
        let holding = token("2026-11-29T10:20:00Z", "2026-11-29T10:50:00Z");
        assert_eq!(namespace_need(&TargetSecret::Managed(Some(holding.clone())), current), NamespaceNeed::Current);
        let older = token("2026-11-29T10:00:00Z", "2026-11-29T10:30:00Z");
        assert_eq!(namespace_need(&TargetSecret::Managed(Some(older)), current), NamespaceNeed::Write);
        let retemplated = CurrentToken { template_current: false, ..holding };
        assert_eq!(namespace_need(&TargetSecret::Managed(Some(retemplated)), current), NamespaceNeed::Write);
        assert_eq!(namespace_need(&TargetSecret::Managed(None), current), NamespaceNeed::Write);
        assert_eq!(namespace_need(&TargetSecret::Absent, current), NamespaceNeed::CheckThenWrite);
        assert_eq!(namespace_need(&TargetSecret::Foreign, current), NamespaceNeed::Conflict);
    }

    #[test]
    fn ready_counts_namespaces_and_says_how_many_lag() {
        let now = at("2026-11-29T10:25:00Z");
        let expiry = Some(at("2026-11-29T10:50:00Z"));
        let mut outcomes: BTreeMap<String, NamespaceOutcome> =
            ["a", "b", "c"].iter().map(|n| ((*n).to_owned(), NamespaceOutcome::Current)).collect();
        let all = summarize(&outcomes, &[], "tok", expiry, now);
        assert_eq!(all.counts, NamespaceCounts { selected: 3, written: 3, failed: 0, missing: 0 });
        assert_eq!((all.ready.0, all.ready.1.as_str()), (true, "TokenValid"));

        outcomes.insert("b".into(), NamespaceOutcome::Lagging(at("2026-11-29T10:30:00Z")));
        let lagging = summarize(&outcomes, &[], "tok", expiry, now);
        assert_eq!((lagging.ready.0, lagging.ready.1.as_str()), (true, NAMESPACES_LAGGING));
        assert!(lagging.ready.2.starts_with("1 of 3 namespaces lag"), "{}", lagging.ready.2);
        // Once the older token in b expires, b holds no valid token: Ready turns False.
        let later = summarize(&outcomes, &[], "tok", expiry, at("2026-11-29T10:31:00Z"));
        assert_eq!((later.ready.0, later.ready.1.as_str()), (false, NAMESPACES_FAILING));

        outcomes.insert("b".into(), NamespaceOutcome::Failed("SecretConflict".into(), "foreign".into(), None));
        let conflict = summarize(&outcomes, &[], "tok", expiry, now);
        assert_eq!(conflict.counts, NamespaceCounts { selected: 3, written: 2, failed: 1, missing: 0 });
        assert_eq!((conflict.ready.0, conflict.ready.1.as_str()), (false, "SecretConflict"));
        assert_eq!(
            conflict.failures,
            vec![NamespaceFailure { namespace: "b".into(), reason: "SecretConflict".into(), message: "foreign".into() }]
        );
        assert!(conflict.ready.2.contains("1 of 3 namespaces hold no valid token"), "{}", conflict.ready.2);

        let many: BTreeMap<String, NamespaceOutcome> =
            (0..20).map(|i| (format!("ns-{i:02}"), NamespaceOutcome::Failed("SecretQuotaExceeded".into(), "quota".into(), None))).collect();
        let summary = summarize(&many, &[], "tok", expiry, now);
        assert_eq!(summary.failures.len(), MAX_LISTED_FAILURES);
        assert_eq!(summary.failures[0].namespace, "ns-00");
        assert_eq!(summary.counts.failed, 20);

        let none = summarize(&BTreeMap::new(), &[], "tok", expiry, now);
        assert_eq!((none.ready.0, none.ready.1.as_str()), (false, NO_NAMESPACES_SELECTED));
        let absent: Vec<String> = (0..7).map(|i| format!("absent-{i}")).collect();
        let named = summarize(&BTreeMap::new(), &absent, "tok", expiry, now);
        assert_eq!((named.counts.missing, named.missing.len()), (7, MAX_LISTED_FAILURES));
        assert!(
            named.ready.2.ends_with("names 7 that do not exist (absent-0, absent-1, absent-2, absent-3, absent-4, ...)"),
            "{}",
            named.ready.2
        );
    }
}
