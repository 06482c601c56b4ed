//! The Ready condition and status construction.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{Failure, NavigatorTokenStatus};
use crate::reasons::{READY, REFRESH_FAILING};

/// What Ready's message adds, and the Warning Event says, when `refreshBefore` is more than half
/// the lifetime granted (`issued_at` to `expires_at`), so the refresh comes at `refresh_at`
/// instead (see `plan::honours_refresh_before`); None when it fits.
pub fn refresh_before_misfit(
    issued_at: Timestamp,
    expires_at: Timestamp,
    refresh_before: Option<std::time::Duration>,
    refresh_at: Timestamp,
) -> Option<String> {
    let lead = refresh_before.filter(|_| !super::plan::honours_refresh_before(issued_at, expires_at, refresh_before))?;
    let lifetime: std::time::Duration = expires_at.duration_since(issued_at).try_into().unwrap_or_default();
    Some(format!(
        "spec.refreshBefore {} is more than half the {} the endpoint granted, so it is refreshed at {} instead; lower refreshBefore or raise the client's token lifetime",
        crate::duration::format(lead),
        crate::duration::format(lifetime),
        rfc3339(refresh_at)
    ))
}

/// The status once the token (`what`, e.g. "the token in Secret x") expired while a failure was
/// backing off: no issuedAt or expiresAt any more; the failure count and the retry time stay.
/// With the reason and message for Ready=False and the `TokenExpired` Event.
pub fn lapsed(previous: Option<&NavigatorTokenStatus>, what: &str) -> (NavigatorTokenStatus, String, String) {
    let mut status = previous.cloned().unwrap_or_default();
    let expired_at = status.expires_at.take().unwrap_or_default();
    status.issued_at = None;
    let (reason, last) = match &status.last_failure {
        Some(f) => (f.reason.clone(), f.message.clone()),
        None => (REFRESH_FAILING.to_owned(), String::new()),
    };
    let retry = status.next_refresh_at.as_deref().unwrap_or_default();
    let message = format!("{what} expired at {expired_at} before a refresh succeeded: {last}. Retrying at {retry}");
    (status, reason, message)
}

/// Sets (or replaces) the Ready condition, keeping lastTransitionTime unless the status flips.
pub fn set_ready(
    status: &mut NavigatorTokenStatus,
    previous: Option<&NavigatorTokenStatus>,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(status, previous, READY, ready, reason, message, generation, now);
}

/// Carries condition `type_` into a status about to be written: `this_time` (ok, reason,
/// message) when this reconcile decided it, else the one `previous` had; none when the
/// condition does not apply (`applies` false).
#[allow(clippy::too_many_arguments)]
pub(super) fn keep_condition(
    status: &mut NavigatorTokenStatus,
    previous: Option<&NavigatorTokenStatus>,
    type_: &str,
    applies: bool,
    this_time: Option<(bool, &str, String)>,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.conditions.retain(|c| c.type_ != type_);
    if !applies {
        return;
    }
    match this_time {
        Some((ok, reason, message)) => set_condition(status, previous, type_, ok, reason, message, generation, now),
        None => status.conditions.extend(previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_)).cloned()),
    }
}

/// Sets (or replaces) the condition `type_`, keeping lastTransitionTime unless the status flips.
#[allow(clippy::too_many_arguments)]
pub fn set_condition(
    status: &mut NavigatorTokenStatus,
    previous: Option<&NavigatorTokenStatus>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let value = if ok { "True" } else { "False" };
    let previous_condition = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous_condition {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.into(),
        status: value.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
}

/// Records a failure: increments the count and keeps the message for users.
pub fn record_failure(
    status: &mut NavigatorTokenStatus,
    previous: Option<&NavigatorTokenStatus>,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    status.consecutive_failures = previous.map_or(0, |s| s.consecutive_failures).saturating_add(1);
    status.last_failure = Some(Box::new(Failure { time: rfc3339(now), reason: reason.into(), message: message.into() }));
}

/// RFC 3339 with second precision, as Kubernetes writes times.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| t.to_string())
}

/// True when the Ready condition is True.
pub fn is_ready(status: Option<&NavigatorTokenStatus>) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == READY && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasons::TOKEN_VALID;

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let t1: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-22T11:00:00Z".parse().unwrap();
        let mut first = NavigatorTokenStatus::default();
        set_ready(&mut first, None, true, TOKEN_VALID, "ok".into(), Some(1), t1);
        let mut second = NavigatorTokenStatus::default();
        set_ready(&mut second, Some(&first), true, TOKEN_VALID, "still ok".into(), Some(2), t2);
        assert_eq!(second.conditions[0].last_transition_time, Time(t1));
        assert_eq!(second.conditions[0].observed_generation, Some(2));
        let mut third = NavigatorTokenStatus::default();
        set_ready(&mut third, Some(&second), false, "Unauthorized", "no".into(), Some(2), t2);
        assert_eq!(third.conditions[0].last_transition_time, Time(t2));
        assert!(!is_ready(Some(&third)) && is_ready(Some(&second)));
    }

    #[test]
    fn failures_count_up() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let mut s1 = NavigatorTokenStatus::default();
        record_failure(&mut s1, None, "Timeout", "slow", now);
        let mut s2 = NavigatorTokenStatus::default();
        record_failure(&mut s2, Some(&s1), "Timeout", "slow", now);
        assert_eq!((s1.consecutive_failures, s2.consecutive_failures), (1, 2));
        assert_eq!(s2.last_failure.unwrap().time, "2026-11-22T10:00:00Z");
    }
}
