//! Kubernetes Events about NavigatorTokens (events.k8s.io/v1).
//!
//! kube's `Recorder` keeps every Event it published in the last few minutes to merge repeats
//! into series; at 10,000 NavigatorTokens that cache was the operator's largest allocation
//! (about 24 MiB after the first issue of each). Events here are published only on changes
//! (first issue, a new failure reason, recovery), so there are no repeats to merge.

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};

use tracing::warn;

use crate::FIELD_MANAGER;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something went as intended.
    Normal,
    /// Something needs attention.
    Warning,
}

/// Publishes Events as this operator instance.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
}

impl Publisher {
    /// `instance` is the reporting instance (the pod name).
    pub fn new(client: Client, instance: String) -> Publisher {
        Publisher { client, instance }
    }

    /// Creates one Event about `token` (a NavigatorToken or ClusterNavigatorToken). Events about a
    /// cluster-scoped object go to the namespace `default`, as kubectl and client-go put them.
    /// An Event that cannot be created is logged: it never fails the reconcile that tells it.
    pub async fn publish<K>(&self, token: &K, type_: EventType, reason: &str, note: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let namespace = token.namespace().unwrap_or_else(|| "default".to_owned());
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta { name: Some(event_name(&token.name_any(), now)), ..ObjectMeta::default() },
            event_time: Some(MicroTime(now)),
            type_: Some(format!("{type_:?}")),
            reason: Some(reason.to_owned()),
            note: Some(note.to_owned()),
            action: Some("IssueToken".to_owned()),
            regarding: Some(token.object_ref(&())),
            reporting_controller: Some(FIELD_MANAGER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        if let Err(error) = Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await {
            warn!(%error, "could not publish event");
        }
    }
}

/// `<object>.<time in hex nanoseconds>`, as client-go names Events. Not `generateName`: the API
/// server requires it to be a valid name itself, and `<object>.` (trailing dot) is not one.
fn event_name(object: &str, now: Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    // Object names are DNS subdomains (at most 253 characters); keep room for the suffix and
    // never end the kept part on a dot or dash.
    let kept = object.get(..object.len().min(253 - suffix.len())).unwrap_or(object).trim_end_matches(['.', '-']);
    format!("{kept}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API server's rule for object names (RFC 1123 subdomain).
    fn is_dns_subdomain(name: &str) -> bool {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        name.len() <= 253 && name.split('.').all(label_ok)
    }

    #[test]
    fn event_names_are_valid_object_names_and_unique_per_time() {
        let t1: Timestamp = "2026-11-29T10:00:00.000000001Z".parse().unwrap();
        let t2: Timestamp = "2026-11-29T10:00:00.000000002Z".parse().unwrap();
        assert_eq!(event_name("t1", t1), format!("t1.{:x}", t1.as_nanosecond()));
        assert_ne!(event_name("t1", t1), event_name("t1", t2));
        let longest = format!("{}.{}", "a".repeat(200), "b-c".repeat(17));
        for object in ["t1", "my.token", "a", longest.as_str()] {
            let name = event_name(object, t1);
            assert!(is_dns_subdomain(&name), "{name}");
        }
    }
}
