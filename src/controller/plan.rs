//! The decisions, free of I/O: given what is observed and the time, what to do and when to look again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::token::RetryClass;

/// First transient retry delay; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest transient retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Retry delay for failures that need a person to act (changes still retry at once).
pub const SLOW_RETRY: Duration = Duration::from_secs(600);
/// Shortest delay after a 429, whatever Retry-After says.
pub const MIN_RATE_LIMIT_DELAY: Duration = Duration::from_secs(1);
/// Largest refresh jitter (it is also at most a tenth of the lifetime).
pub const MAX_JITTER: Duration = Duration::from_secs(300);
/// Longest safety margin kept before expiry (also at most a tenth of the lifetime).
pub const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(60);
/// Re-check a healthy token at least this often (cheap: reads caches only).
pub const MAX_RECHECK: Duration = Duration::from_secs(3600);

/// What a reconcile asks for next: another look after a delay, or none until something changes.
/// kube's `Action` says the same but keeps the delay to itself; the NavigatorToken queue
/// (`queue`) needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    /// How long until the next look; `None` waits for a change.
    pub requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `after`.
    pub const fn requeue(after: Duration) -> Self {
        Action { requeue_after: Some(after) }
    }

    /// Look again only when something changes.
    pub const fn await_change() -> Self {
        Action { requeue_after: None }
    }
}

impl From<Action> for kube::runtime::controller::Action {
    fn from(action: Action) -> Self {
        match action.requeue_after {
            Some(after) => Self::requeue(after),
            None => Self::await_change(),
        }
    }
}

/// The token currently in the target Secret, as far as the operator can tell.
#[derive(Clone, Debug, PartialEq)]
pub struct CurrentToken {
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The token under the access-token key still matches the fingerprint the operator wrote.
    pub intact: bool,
    /// The inputs it was issued from match the current spec, credentials and refresh request.
    pub inputs_current: bool,
    /// Labels, annotations, keys and owner reference match the current spec.
    pub template_current: bool,
}

/// What the target Secret looks like.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetSecret {
    /// No Secret of that name.
    Absent,
    /// A Secret of that name the operator did not create; never overwritten.
    Foreign,
    /// The operator's Secret; `None` when it holds nothing usable (annotations missing or unparsable).
    Managed(Option<CurrentToken>),
}

impl TargetSecret {
    /// The token in it, when the Secret is the operator's and the token untouched and unexpired.
    pub fn valid_token(&self, now: Timestamp) -> Option<&CurrentToken> {
        match self {
            TargetSecret::Managed(Some(c)) if c.intact && c.expires_at > now => Some(c),
            _ => None,
        }
    }
}

/// The failure history kept in status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailureState {
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the next attempt is due.
    pub retry_at: Option<Timestamp>,
    /// The last attempt used the same inputs as now (otherwise retry at once).
    pub same_inputs: bool,
    /// The last failure was writing the target Secret: once that Secret is gone (deleted to
    /// clear an immutable or mistyped one), retry at once.
    pub secret_write: bool,
    /// The endpoint rejected the credentials themselves (an API or refresh token): wait for a
    /// change of the inputs, with no time-based retry at all.
    pub until_credentials_change: bool,
}

/// Everything the decision depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// spec.suspend.
    pub suspended: bool,
    /// spec.refreshBefore, parsed.
    pub refresh_before: Option<Duration>,
    /// The target Secret.
    pub secret: TargetSecret,
    /// The failure history.
    pub failures: FailureState,
    /// Status says Ready=True.
    pub ready: bool,
    /// Stable per object (its uid): spreads refreshes of tokens created together.
    pub jitter_seed: u64,
}

/// Why a new token is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// There is no token yet.
    Initial,
    /// The refresh time has come.
    Refresh,
    /// The spec, credentials or refresh-requested-at annotation changed.
    InputsChanged,
    /// Someone edited or removed the token in the Secret.
    Drift,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// spec.suspend: request nothing.
    Suspended,
    /// A Secret of the target name belongs to someone else.
    SecretConflict,
    /// A failure is backing off; wait until `retry_at`.
    WaitForRetry,
    /// Backing off, and the token in the Secret has expired since status called it valid:
    /// Ready turns False, the wait goes on.
    Lapsed,
    /// The current token is fine; rewrite the Secret only if its template changed.
    Keep {
        /// Labels/annotations/owner reference need updating (same token).
        rewrite_secret: bool,
    },
    /// Request a new token.
    Issue(IssueReason),
}

/// The decision: a step and when to reconcile next.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do now.
    pub step: Step,
    /// When to look again (None: only on a change).
    pub next_at: Option<Timestamp>,
}

/// Decides what to do with one NavigatorToken at `now`.
pub fn decide(observed: &Observed, now: Timestamp) -> Plan {
    if observed.suspended {
        return Plan { step: Step::Suspended, next_at: None };
    }
    // A failure backs off only while nothing the user controls has changed since. This comes
    // first: every failure writes status, and status writes trigger reconciles.
    let failures = &observed.failures;
    let cleared_for_rewrite = failures.secret_write && observed.secret == TargetSecret::Absent;
    let waiting = match failures.until_credentials_change {
        true => Some(None),
        false => failures.retry_at.filter(|at| *at > now).map(Some),
    };
    if failures.consecutive_failures > 0
        && failures.same_inputs
        && !cleared_for_rewrite
        && let Some(retry_at) = waiting
    {
        // Look again at expiry too, so that Ready never claims a token that has lapsed.
        let valid_until = observed.secret.valid_token(now).map(|c| c.expires_at);
        let step = if observed.ready && valid_until.is_none() { Step::Lapsed } else { Step::WaitForRetry };
        let next_at = match (valid_until, retry_at) {
            (Some(expiry), Some(retry)) => Some(expiry.min(retry)),
            (expiry, retry) => expiry.or(retry),
        };
        return Plan { step, next_at };
    }
    let current = match &observed.secret {
        TargetSecret::Foreign => return Plan { step: Step::SecretConflict, next_at: None },
        TargetSecret::Managed(Some(current)) => Some(current),
        TargetSecret::Absent | TargetSecret::Managed(None) => None,
    };
    let refresh_at = current.map(|c| refresh_at(c.issued_at, c.expires_at, observed.refresh_before, observed.jitter_seed));
    let wanted = match current {
        None if matches!(observed.secret, TargetSecret::Absent) => Some(IssueReason::Initial),
        None => Some(IssueReason::Drift),
        Some(c) if !c.intact => Some(IssueReason::Drift),
        Some(c) if !c.inputs_current => Some(IssueReason::InputsChanged),
        Some(_) if refresh_at.is_some_and(|at| at <= now) => Some(IssueReason::Refresh),
        Some(_) => None,
    };
    match wanted {
        Some(reason) => Plan { step: Step::Issue(reason), next_at: None },
        None => {
            let rewrite_secret = current.is_some_and(|c| !c.template_current);
            let next_at = refresh_at.map(|at| at.min(add(now, MAX_RECHECK)));
            Plan { step: Step::Keep { rewrite_secret }, next_at }
        }
    }
}

/// When to refresh a token: `refreshBefore` (default a third of the lifetime) ahead of expiry,
/// minus a per-object jitter, never later than a safety margin before expiry, and never before
/// half the granted lifetime has passed (a `refreshBefore` close to the lifetime, or a grant
/// shorter than asked, would otherwise refresh right after each issue).
pub fn refresh_at(issued_at: Timestamp, expires_at: Timestamp, refresh_before: Option<Duration>, jitter_seed: u64) -> Timestamp {
    let lifetime: Duration = expires_at.duration_since(issued_at).try_into().unwrap_or(Duration::ZERO);
    let tenth = lifetime / 10;
    // A granted lifetime shorter than refreshBefore would refresh at once forever: fall back to a third.
    let lead = refresh_before.filter(|lead| *lead < lifetime).unwrap_or(lifetime / 3);
    let jitter = tenth.min(MAX_JITTER).mul_f64(unit_fraction(jitter_seed));
    let safety = tenth.min(MAX_SAFETY_MARGIN);
    let at = sub(expires_at, lead.max(safety) + jitter);
    at.max(add(issued_at, lifetime / 2))
}

/// False when `refreshBefore` does not fit the lifetime the endpoint granted: more than half of
/// it, so that [`refresh_at`] refreshes later than `refreshBefore` ahead of expiry (at half the
/// lifetime, or a third ahead when `refreshBefore` exceeds the whole lifetime).
pub fn honours_refresh_before(issued_at: Timestamp, expires_at: Timestamp, refresh_before: Option<Duration>) -> bool {
    let lifetime: Duration = expires_at.duration_since(issued_at).try_into().unwrap_or(Duration::ZERO);
    refresh_before.is_none_or(|lead| lead.saturating_mul(2) <= lifetime)
}

/// The jitter seed of an object: SHA-256 of its uid, so that planned refresh times (written to
/// status) stay the same across restarts, hosts and Rust releases.
pub fn jitter_seed(uid: &str) -> u64 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Delay before retrying after the `consecutive_failures`-th failure in a row.
pub fn retry_delay(class: RetryClass, consecutive_failures: u32, jitter_seed: u64) -> Duration {
    let exponential = || {
        let doublings = consecutive_failures.saturating_sub(1).min(16);
        let delay = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
        // ±20 % so that tokens failing together do not retry together.
        let spread = 0.8 + 0.4 * unit_fraction(jitter_seed ^ u64::from(consecutive_failures).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        delay.mul_f64(spread)
    };
    match class {
        RetryClass::Transient => exponential(),
        // Never by time (see `FailureState::until_credentials_change`); the slow retry is only
        // the bound for callers that need a time.
        RetryClass::NeedsUserAction | RetryClass::UntilCredentialsChange => SLOW_RETRY,
        RetryClass::RateLimited(Some(after)) => after.max(MIN_RATE_LIMIT_DELAY),
        RetryClass::RateLimited(None) => exponential().max(Duration::from_secs(10)),
    }
}

/// A stable number in [0, 1) from a seed (splitmix64 finaliser).
fn unit_fraction(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `t + d`, saturating.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d).ok().and_then(|d| t.checked_sub(d).ok()).unwrap_or(Timestamp::MIN)
}

/// The requeue for a look again at `at` (never sooner than 100 ms), or none without a time.
pub(super) fn requeue_at(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => Action::requeue(at.duration_since(now).try_into().unwrap_or(Duration::ZERO).max(Duration::from_millis(100))),
        None => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const T0: &str = "2026-11-22T10:00:00Z";

    fn healthy(issued: &str, expires: &str) -> CurrentToken {
        CurrentToken { issued_at: at(issued), expires_at: at(expires), intact: true, inputs_current: true, template_current: true }
    }

    fn observed(secret: TargetSecret) -> Observed {
        Observed { suspended: false, refresh_before: None, secret, failures: FailureState::default(), ready: false, jitter_seed: 42 }
    }

    #[test]
    fn no_secret_means_first_issue() {
        let plan = decide(&observed(TargetSecret::Absent), at(T0));
        assert_eq!(plan.step, Step::Issue(IssueReason::Initial));
    }

    #[test]
    fn foreign_secret_is_never_touched() {
        let plan = decide(&observed(TargetSecret::Foreign), at(T0));
        assert_eq!(plan, Plan { step: Step::SecretConflict, next_at: None });
    }

    #[test]
    fn healthy_token_is_kept_until_its_refresh_time() {
        let o = observed(TargetSecret::Managed(Some(healthy("2026-11-22T09:50:00Z", "2026-11-22T10:20:00Z"))));
        let plan = decide(&o, at(T0));
        let refresh = refresh_at(at("2026-11-22T09:50:00Z"), at("2026-11-22T10:20:00Z"), None, 42);
        assert_eq!(plan, Plan { step: Step::Keep { rewrite_secret: false }, next_at: Some(refresh) });
        // Default: a third of 30m before expiry (10:10), minus at most 3m jitter.
        assert!(refresh <= at("2026-11-22T10:10:00Z") && refresh >= at("2026-11-22T10:07:00Z"), "{refresh}");
        assert_eq!(decide(&o, refresh).step, Step::Issue(IssueReason::Refresh));
    }

    #[test]
    fn refresh_before_sets_the_lead_and_the_safety_margin_bounds_it() {
        let (issued, expires) = (at("2026-11-22T10:00:00Z"), at("2026-11-22T11:00:00Z"));
        let with_lead = refresh_at(issued, expires, Some(Duration::from_secs(600)), 7);
        assert!(with_lead <= at("2026-11-22T10:50:00Z") && with_lead >= at("2026-11-22T10:45:00Z"), "{with_lead}");
        // refreshBefore of 1s would be too late: the 60s safety margin wins.
        let tiny = refresh_at(issued, expires, Some(Duration::from_secs(1)), 7);
        assert!(tiny <= at("2026-11-22T10:59:00Z"), "{tiny}");
        // Granted lifetime shorter than refreshBefore: fall back to a third, not "refresh now".
        let short = refresh_at(issued, at("2026-11-22T10:05:00Z"), Some(Duration::from_secs(600)), 7);
        assert!(short > issued && short <= at("2026-11-22T10:03:20Z"), "{short}");
    }

    #[test]
    fn jitter_spreads_tokens_created_together() {
        let (issued, expires) = (at(T0), at("2026-11-22T11:00:00Z"));
        let mut times: Vec<Timestamp> = (0..50).map(|seed| refresh_at(issued, expires, None, seed)).collect();
        times.sort();
        times.dedup();
        assert!(times.len() >= 45, "only {} distinct refresh times", times.len());
        let spread = times.last().unwrap().duration_since(times[0]);
        assert!(spread > SignedDuration::from_secs(120), "spread {spread:?}");
        assert!(*times.last().unwrap() <= at("2026-11-22T10:40:00Z"));
    }

    #[test]
    fn short_lifetimes_of_seconds_still_refresh_before_expiry() {
        let issued = at(T0);
        let expires = add(issued, Duration::from_secs(6));
        for seed in 0..20 {
            let r = refresh_at(issued, expires, None, seed);
            assert!(r > issued && r < expires, "{r}");
            assert!(expires.duration_since(r) >= SignedDuration::from_secs(2));
        }
    }

    #[test]
    fn drift_inputs_and_template_changes() {
        let mut token = healthy("2026-11-22T09:50:00Z", "2026-11-22T10:20:00Z");
        token.intact = false;
        assert_eq!(decide(&observed(TargetSecret::Managed(Some(token.clone()))), at(T0)).step, Step::Issue(IssueReason::Drift));
        assert_eq!(decide(&observed(TargetSecret::Managed(None)), at(T0)).step, Step::Issue(IssueReason::Drift));
        token.intact = true;
        token.inputs_current = false;
        assert_eq!(decide(&observed(TargetSecret::Managed(Some(token.clone()))), at(T0)).step, Step::Issue(IssueReason::InputsChanged));
        token.inputs_current = true;
        token.template_current = false;
        assert_eq!(decide(&observed(TargetSecret::Managed(Some(token))), at(T0)).step, Step::Keep { rewrite_secret: true });
    }

    #[test]
    fn suspended_requests_nothing() {
        let mut o = observed(TargetSecret::Absent);
        o.suspended = true;
        assert_eq!(decide(&o, at(T0)), Plan { step: Step::Suspended, next_at: None });
    }

    #[test]
    fn a_conflict_is_not_re_reported_while_backing_off() {
        let mut o = observed(TargetSecret::Foreign);
        o.failures = FailureState {
            consecutive_failures: 1,
            retry_at: Some(at("2026-11-22T10:10:00Z")),
            same_inputs: true,
            secret_write: false,
            until_credentials_change: false,
        };
        assert_eq!(decide(&o, at(T0)).step, Step::WaitForRetry);
        assert_eq!(decide(&o, at("2026-11-22T10:10:00Z")).step, Step::SecretConflict);
    }

    #[test]
    fn failures_back_off_unless_inputs_changed() {
        let mut o = observed(TargetSecret::Absent);
        o.failures = FailureState {
            consecutive_failures: 3,
            retry_at: Some(at("2026-11-22T10:00:30Z")),
            same_inputs: true,
            secret_write: false,
            until_credentials_change: false,
        };
        assert_eq!(decide(&o, at(T0)), Plan { step: Step::WaitForRetry, next_at: Some(at("2026-11-22T10:00:30Z")) });
        assert_eq!(decide(&o, at("2026-11-22T10:00:30Z")).step, Step::Issue(IssueReason::Initial));
        o.failures.same_inputs = false;
        assert_eq!(decide(&o, at(T0)).step, Step::Issue(IssueReason::Initial));
    }

    #[test]
    fn rejected_credentials_wait_for_a_change_and_not_for_a_time() {
        let mut o = observed(TargetSecret::Managed(Some(healthy("2026-11-22T09:50:00Z", "2026-11-22T10:20:00Z"))));
        o.failures = FailureState { consecutive_failures: 1, same_inputs: true, until_credentials_change: true, ..FailureState::default() };
        // No retry time at all: only the still-valid token's expiry is looked at (for Ready).
        assert_eq!(decide(&o, at(T0)), Plan { step: Step::WaitForRetry, next_at: Some(at("2026-11-22T10:20:00Z")) });
        let days_later = at("2026-11-29T10:00:00Z");
        assert_eq!(decide(&o, days_later), Plan { step: Step::WaitForRetry, next_at: None });
        o.ready = true;
        assert_eq!(decide(&o, days_later).step, Step::Lapsed, "Ready turns False once the kept token expires");
        o.failures.same_inputs = false;
        assert_eq!(decide(&o, days_later).step, Step::Issue(IssueReason::Refresh), "new credentials are tried at once");
    }

    #[test]
    fn retry_delays_are_bounded_and_classified() {
        let transient: Vec<Duration> = (1..=12).map(|n| retry_delay(RetryClass::Transient, n, 9)).collect();
        assert!(transient[0] >= Duration::from_millis(1600) && transient[0] <= Duration::from_millis(2400));
        assert!(transient[3] > transient[1]);
        assert!(transient.iter().all(|d| *d <= BACKOFF_CAP.mul_f64(1.2)));
        assert_eq!(retry_delay(RetryClass::NeedsUserAction, 1, 9), SLOW_RETRY);
        assert_eq!(retry_delay(RetryClass::RateLimited(Some(Duration::from_secs(30))), 1, 9), Duration::from_secs(30));
        assert_eq!(retry_delay(RetryClass::RateLimited(Some(Duration::ZERO)), 1, 9), MIN_RATE_LIMIT_DELAY);
        assert!(retry_delay(RetryClass::RateLimited(None), 1, 9) >= Duration::from_secs(10));
    }

    #[test]
    fn refresh_waits_for_half_the_granted_lifetime() {
        // validity 30m with refreshBefore 29m: the jitter once pulled the refresh to the moment
        // of issue, and the token was re-requested ten times a second.
        let (issued, expires) = (at(T0), at("2026-11-22T10:30:00Z"));
        for seed in 0..200 {
            let r = refresh_at(issued, expires, Some(Duration::from_secs(29 * 60)), seed);
            assert!(r >= at("2026-11-22T10:15:00Z") && r < expires, "seed {seed}: {r}");
        }
        // The endpoint granted 10m of the 30m asked, with refreshBefore 10m: half is 5m.
        let granted = at("2026-11-22T10:10:00Z");
        for seed in 0..200 {
            let r = refresh_at(issued, granted, Some(Duration::from_secs(600)), seed);
            assert!(r >= at("2026-11-22T10:05:00Z") && r < granted, "seed {seed}: {r}");
        }
    }

    /// Computed independently: `hashlib.sha256(uid).digest()[:8]` as a big-endian integer.
    const PINNED_SEED: u64 = 0xc3bc_e31f_14e5_1803;

    #[test]
    fn the_jitter_seed_is_a_specified_hash_of_the_uid() {
        // SHA-256("3f0c2a5e-1b7d-4c8e-9a6f-2d4b8e1c7a90"), first 8 bytes big-endian: a toolchain
        // upgrade must not move a single planned refresh.
        let uid = "3f0c2a5e-1b7d-4c8e-9a6f-2d4b8e1c7a90";
        let digest = Sha256::digest(uid.as_bytes());
        assert_eq!(jitter_seed(uid), u64::from_be_bytes(digest[..8].try_into().unwrap()));
        assert_eq!(jitter_seed(uid), PINNED_SEED);
        assert_ne!(jitter_seed(uid), jitter_seed("another-uid"));
    }

    fn waiting(secret: TargetSecret, ready: bool) -> Observed {
        let mut o = observed(secret);
        o.ready = ready;
        o.failures = FailureState {
            consecutive_failures: 4,
            retry_at: Some(at("2026-11-22T10:30:00Z")),
            same_inputs: true,
            secret_write: false,
            until_credentials_change: false,
        };
        o
    }

    #[test]
    fn a_token_that_expires_during_a_backoff_turns_ready_false_at_its_expiry() {
        let current = healthy("2026-11-22T09:30:00Z", "2026-11-22T10:10:00Z");
        let o = waiting(TargetSecret::Managed(Some(current)), true);
        // Before expiry: wait, but look again at expiry (10:10), not only at the retry (10:30).
        assert_eq!(decide(&o, at(T0)), Plan { step: Step::WaitForRetry, next_at: Some(at("2026-11-22T10:10:00Z")) });
        // At expiry: Ready must turn False while the wait for 10:30 goes on.
        assert_eq!(decide(&o, at("2026-11-22T10:10:00Z")), Plan { step: Step::Lapsed, next_at: Some(at("2026-11-22T10:30:00Z")) });
        // Once status says False, nothing more to write.
        let o = waiting(o.secret.clone(), false);
        assert_eq!(decide(&o, at("2026-11-22T10:10:00Z")).step, Step::WaitForRetry);
    }

    #[test]
    fn a_failed_secret_write_retries_at_once_when_the_secret_is_deleted() {
        let current = healthy("2026-11-22T09:50:00Z", "2026-11-22T10:20:00Z");
        let mut o = waiting(TargetSecret::Managed(Some(current)), true);
        o.failures.secret_write = true;
        assert_eq!(decide(&o, at(T0)).step, Step::WaitForRetry);
        // Someone deleted the immutable Secret, as the status message asks.
        o.secret = TargetSecret::Absent;
        assert_eq!(decide(&o, at(T0)).step, Step::Issue(IssueReason::Initial));
        // A token-request failure keeps backing off whatever happens to the Secret (and Ready
        // turns False: the Secret holds no token now).
        o.failures.secret_write = false;
        assert_eq!(decide(&o, at(T0)).step, Step::Lapsed);
    }

    #[test]
    fn refresh_before_is_honoured_only_within_half_the_granted_lifetime() {
        let (issued, expires) = (at(T0), at("2026-11-22T10:10:00Z"));
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        assert!(honours_refresh_before(issued, expires, None));
        assert!(honours_refresh_before(issued, expires, minutes(5)));
        // 30m asked, 10m granted, refreshBefore 10m: refreshed at half the lifetime instead.
        assert!(!honours_refresh_before(issued, expires, minutes(6)));
        assert!(!honours_refresh_before(issued, expires, minutes(10)));
        for seed in 0..50 {
            let r = refresh_at(issued, expires, minutes(6), seed);
            assert!(r > sub(expires, Duration::from_secs(360)), "not honoured means later than refreshBefore ahead: {r}");
        }
    }
}
