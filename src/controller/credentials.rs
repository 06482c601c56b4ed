//! What the operator keeps of a credentials Secret: a tenant may label any Secret of its
//! namespace as credentials, of any size, so the cache keeps only a bounded part of each.
//!
//! A Secret is decoded straight into [`CredentialsSecret`] by its watch (`#[serde(from =
//! "Secret")]`, as the managed Secrets are): its identity, and the values of at most
//! [`MAX_KEPT_KEYS`] keys whose names and values together fit in [`MAX_KEPT_BYTES`], the
//! smallest first (credentials are short; a large certificate or a padding key is what gets
//! left out). The keys left out are remembered by name, so that a spec naming one of them is
//! told why instead of "missing".

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde::Deserialize;

use crate::redact::Sensitive;

/// Most keys kept per credentials Secret.
pub const MAX_KEPT_KEYS: usize = 16;
/// Most bytes of key names and values (trimmed) kept per credentials Secret.
pub const MAX_KEPT_BYTES: usize = 8 * 1024;
/// Most names of keys left out that are remembered (for messages); beyond it, only that there
/// were more.
const MAX_DROPPED_NAMES: usize = 16;

/// A credentials Secret as its watch decodes it (see the module's documentation).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Secret")]
pub struct CredentialsSecret {
    /// Name, namespace, uid and resourceVersion; nothing else is kept.
    metadata: ObjectMeta,
    /// The keys kept, with their values.
    kept: Vec<(String, KeptValue)>,
    /// Keys left out, and why (at most [`MAX_DROPPED_NAMES`]).
    dropped: Vec<(String, Dropped)>,
    /// More keys were left out than `dropped` names.
    more_dropped: bool,
}

/// A kept value: the text, trimmed as it is used, or the fact that it is no text.
#[derive(Clone, Debug)]
enum KeptValue {
    Text(Sensitive),
    NotText,
}

/// Why a key was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dropped {
    /// Its value did not fit in what was left of [`MAX_KEPT_BYTES`].
    TooLarge,
    /// [`MAX_KEPT_KEYS`] smaller keys were kept already.
    TooMany,
}

/// Why a key's value cannot be used; [`KeyProblem::describe`] says it to a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// No such key (among those kept or left out).
    Missing,
    /// Not UTF-8.
    NotText,
    /// Empty or only whitespace.
    Empty,
    /// Left out: larger than what is kept per Secret.
    TooLarge,
    /// Left out: beyond the number of keys kept per Secret.
    TooMany,
    /// Not among the keys kept, and the Secret had more keys left out than are remembered.
    MissingOrDropped,
}

impl KeyProblem {
    /// What is wrong with key `key`, after "credentials Secret NAME: ".
    pub fn describe(self, key: &str) -> String {
        let kib = MAX_KEPT_BYTES / 1024;
        match self {
            KeyProblem::Missing => format!("key {key} is missing"),
            KeyProblem::NotText => format!("key {key} is not UTF-8 text"),
            KeyProblem::Empty => format!("key {key} is empty"),
            KeyProblem::TooLarge => format!(
                "key {key} is larger than the {kib} KiB the operator keeps per credentials Secret; keep only the credentials in this Secret"
            ),
            KeyProblem::TooMany => format!(
                "key {key} is beyond the {MAX_KEPT_KEYS} keys the operator keeps per credentials Secret; keep only the credentials in this Secret"
            ),
            KeyProblem::MissingOrDropped => format!(
                "key {key} is missing, or among the keys left out because the Secret holds more than the {MAX_KEPT_KEYS} keys or {kib} KiB the operator keeps per credentials Secret; keep only the credentials in this Secret"
            ),
        }
    }
}

impl CredentialsSecret {
    /// The value of `key`, trimmed and not empty.
    pub fn value(&self, key: &str) -> Result<&str, KeyProblem> {
        match self.kept.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            Some(KeptValue::Text(text)) if text.is_empty() => Err(KeyProblem::Empty),
            Some(KeptValue::Text(text)) => Ok(text.expose()),
            Some(KeptValue::NotText) => Err(KeyProblem::NotText),
            None => Err(match self.dropped.iter().find(|(k, _)| k == key).map(|(_, why)| *why) {
                Some(Dropped::TooLarge) => KeyProblem::TooLarge,
                Some(Dropped::TooMany) => KeyProblem::TooMany,
                None if self.more_dropped => KeyProblem::MissingOrDropped,
                None => KeyProblem::Missing,
            }),
        }
    }

    /// Bytes of key names and values kept (at most [`MAX_KEPT_BYTES`]).
    pub fn kept_bytes(&self) -> usize {
        self.kept.iter().map(|(key, value)| key.len() + value.len()).sum()
    }
}

impl KeptValue {
    fn len(&self) -> usize {
        match self {
            KeptValue::Text(text) => text.expose().len(),
            KeptValue::NotText => 0,
        }
    }
}

impl From<Secret> for CredentialsSecret {
    fn from(secret: Secret) -> Self {
        // Decoded (and trimmed, as it is used) before it is measured: whitespace around a value
        // costs nothing, and a value that is no text keeps only that fact.
        let mut candidates: Vec<(String, KeptValue)> = secret
            .data
            .into_iter()
            .flatten()
            .map(|(key, bytes)| {
                let value = match String::from_utf8(bytes.0) {
                    Ok(text) => {
                        let trimmed = text.trim();
                        KeptValue::Text(Sensitive::new(if trimmed.len() == text.len() { text } else { trimmed.to_owned() }))
                    }
                    Err(_) => KeptValue::NotText,
                };
                (key, value)
            })
            .collect();
        // The smallest first: the budget goes to as many keys as it can hold.
        candidates.sort_by(|(ka, va), (kb, vb)| (ka.len() + va.len()).cmp(&(kb.len() + vb.len())).then_with(|| ka.cmp(kb)));
        let (mut kept, mut dropped, mut more_dropped, mut bytes) = (Vec::new(), Vec::new(), false, 0);
        for (key, value) in candidates {
            let size = key.len() + value.len();
            let why = if kept.len() >= MAX_KEPT_KEYS {
                Dropped::TooMany
            } else if bytes + size > MAX_KEPT_BYTES {
                Dropped::TooLarge
            } else {
                bytes += size;
                kept.push((key, value));
                continue;
            };
            // The value is freed here; only the name is remembered, and only a few of them.
            if dropped.len() < MAX_DROPPED_NAMES {
                dropped.push((key, why));
            } else {
                more_dropped = true;
            }
        }
        kept.shrink_to_fit();
        dropped.shrink_to_fit();
        let metadata = ObjectMeta {
            name: secret.metadata.name,
            namespace: secret.metadata.namespace,
            uid: secret.metadata.uid,
            resource_version: secret.metadata.resource_version,
            ..ObjectMeta::default()
        };
        CredentialsSecret { metadata, kept, dropped, more_dropped }
    }
}

watched_as_secret!(CredentialsSecret);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Decoded from the JSON the API server sends, as the watch decodes it.
    fn decode(data: serde_json::Value) -> CredentialsSecret {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                         "labels": {"navigator.dev/credentials": "true"}, "annotations": {"a": "b"}},
            "data": data});
        serde_json::from_value(secret).unwrap()
    }

    fn b64(value: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(value)
    }

    #[test]
    fn a_large_value_is_left_out_and_named_when_asked_for() {
        let mib = vec![b'x'; 1024 * 1024];
        let kept = decode(json!({"client_id": b64(b"robot"), "client_secret": b64(b" s3cret\n"), "padding": b64(&mib)}));
        assert!(kept.kept_bytes() <= MAX_KEPT_BYTES, "{}", kept.kept_bytes());
        assert_eq!(kept.kept_bytes(), "client_id".len() + 5 + "client_secret".len() + 6);
        assert_eq!(kept.value("client_id"), Ok("robot"));
        assert_eq!(kept.value("client_secret"), Ok("s3cret"), "trimmed as it is used");
        assert_eq!(kept.value("padding"), Err(KeyProblem::TooLarge));
        assert!(KeyProblem::TooLarge.describe("padding").contains("key padding is larger than the 8 KiB"));
        assert_eq!(kept.value("other"), Err(KeyProblem::Missing));
        // Only the identity of the object is kept.
        assert_eq!(kept.metadata.name.as_deref(), Some("creds"));
        assert_eq!(kept.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("7"));
        assert!(kept.metadata.labels.is_none() && kept.metadata.annotations.is_none());
        assert!(!format!("{kept:?}").contains("s3cret"), "{kept:?}");
    }

    #[test]
    fn the_budget_goes_to_the_smallest_keys_and_bounds_their_number() {
        let mut data = serde_json::Map::new();
        for i in 0..40 {
            data.insert(format!("k{i:02}"), json!(b64(format!("value-{i}").as_bytes())));
        }
        data.insert("big-1".into(), json!(b64(&[b'y'; 6000])));
        data.insert("big-2".into(), json!(b64(&[b'z'; 6000])));
        data.insert("binary".into(), json!(b64(&[0xff, 0xfe])));
        let kept = decode(serde_json::Value::Object(data));
        assert_eq!(kept.kept.len(), MAX_KEPT_KEYS);
        assert!(kept.kept_bytes() <= MAX_KEPT_BYTES);
        assert_eq!(kept.value("binary"), Err(KeyProblem::NotText), "the smallest entry");
        assert_eq!(kept.value("k00"), Ok("value-0"));
        assert_eq!(kept.value("k15"), Err(KeyProblem::TooMany));
        assert!(kept.dropped.len() <= MAX_DROPPED_NAMES && kept.more_dropped);
        // Not remembered by name: the message says it may have been left out.
        assert_eq!(kept.value("k39"), Err(KeyProblem::MissingOrDropped));
        assert_eq!(kept.value("big-2"), Err(KeyProblem::MissingOrDropped));

        let two_big = decode(json!({"big-1": b64(&[b'y'; 6000]), "big-2": b64(&[b'z'; 6000]), "empty": b64(b"  ")}));
        assert_eq!(two_big.value("big-1").map(str::len), Ok(6000));
        assert_eq!(two_big.value("big-2"), Err(KeyProblem::TooLarge), "the rest of the budget is too small for it");
        assert_eq!(two_big.value("empty"), Err(KeyProblem::Empty));
    }
}
