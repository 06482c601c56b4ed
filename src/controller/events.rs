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

use crate::FIELD_MANAGER;
use crate::crd::NavigatorToken;

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

    /// Creates one Event about `token`.
    pub async fn publish(&self, token: &NavigatorToken, type_: EventType, reason: &str, note: &str) -> Result<(), kube::Error> {
        let namespace = token.namespace().unwrap_or_default();
        let event = Event {
            // `<name>-`, not `<name>.`: the API server requires generateName to be a valid name
            // prefix, and one ending in '.' is not (422).
            metadata: ObjectMeta { generate_name: Some(format!("{}-", token.name_any())), ..ObjectMeta::default() },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(format!("{type_:?}")),
            reason: Some(reason.to_owned()),
            note: Some(note.to_owned()),
            action: Some("IssueToken".to_owned()),
            regarding: Some(token.object_ref(&())),
            reporting_controller: Some(FIELD_MANAGER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await.map(drop)
    }
}
