//! What the operator keeps of a credentials Secret: a tenant may label any Secret of its
//! namespace as credentials, of any size, so the cache keeps only a bounded part of each.
//!
//! A Secret is decoded straight into [`CredentialsSecret`] by its watch, as it is read from the
//! response text: its identity, and the values of at most [`MAX_KEPT_KEYS`] keys whose names and
//! values together fit in [`MAX_KEPT_BYTES`], the smallest first (credentials are short; a large
//! certificate or a padding key is what gets left out). The keys left out are remembered by
//! name, so that a spec naming one of them is told why instead of "missing".
//!
//! The decoding never holds more than that bound: `data` is walked entry by entry, a value
//! whose base64 text is larger than the budget is never decoded (only its name is remembered,
//! as too large), and a value that fits alone is decoded and then kept only while it is among
//! the smallest. The rest of the Secret (labels, annotations, managedFields, `stringData`,
//! which the API server never returns) is skipped unread.

use std::fmt;

use base64::Engine;
use kube::api::ObjectMeta;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::redact::Sensitive;

/// Most keys kept per credentials Secret.
pub const MAX_KEPT_KEYS: usize = 16;
/// Most bytes of key names and values (trimmed) kept per credentials Secret.
pub const MAX_KEPT_BYTES: usize = 8 * 1024;
/// Most names of keys left out that are remembered (for messages); beyond it, only that there
/// were more.
const MAX_DROPPED_NAMES: usize = 16;

/// A credentials Secret as its watch decodes it (see the module's documentation).
#[derive(Clone, Debug)]
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
    /// Decoded (and trimmed, as it is used) before it is measured: whitespace around a value
    /// costs nothing, and a value that is no text keeps only that fact.
    fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => {
                let trimmed = text.trim();
                KeptValue::Text(Sensitive::new(if trimmed.len() == text.len() { text } else { trimmed.to_owned() }))
            }
            Err(_) => KeptValue::NotText,
        }
    }

    fn len(&self) -> usize {
        match self {
            KeptValue::Text(text) => text.expose().len(),
            KeptValue::NotText => 0,
        }
    }
}

watched_as_secret!(CredentialsSecret);

impl<'de> Deserialize<'de> for CredentialsSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SecretVisitor)
    }
}

/// The fields of a Secret that are read; every other one is skipped unread.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Metadata,
    Data,
    #[serde(other)]
    Other,
}

/// What is read of `metadata`: the object's identity. Labels, annotations and managedFields
/// (as large as a tenant makes them) are skipped unread.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = CredentialsSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Secret")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CredentialsSecret, A::Error> {
        let mut identity = None;
        let mut selection = Selection::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Metadata => identity = Some(map.next_value::<Identity>()?),
                Field::Data => map.next_value_seed(DataSeed(&mut selection))?,
                Field::Other => drop(map.next_value::<IgnoredAny>()?),
            }
        }
        let Identity { name, namespace, uid, resource_version } = identity.unwrap_or_default();
        let metadata = ObjectMeta { name, namespace, uid, resource_version, ..ObjectMeta::default() };
        Ok(selection.finish(metadata))
    }
}

/// `data`: a map of base64 values (or null), offered to the selection one entry at a time.
struct DataSeed<'a>(&'a mut Selection);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of base64-encoded values")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let room = MAX_KEPT_BYTES.saturating_sub(key.len());
            let value = map.next_value_seed(ValueSeed { room })?;
            self.0.offer(key, value);
        }
        Ok(())
    }
}

/// One value of `data`, as read.
enum Offered {
    /// Decoded: it fits the budget on its own.
    Value(KeptValue),
    /// Not decoded: its decoded size (given) alone is over the budget.
    TooLarge(usize),
}

/// Reads one base64 value, decoding it only if its decoded size is at most `room` bytes.
struct ValueSeed {
    room: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Offered;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Offered, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Offered;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64-encoded string")
    }

    /// As k8s-openapi reads it: a null value is an empty one.
    fn visit_none<E: de::Error>(self) -> Result<Offered, E> {
        Ok(Offered::Value(KeptValue::Text(Sensitive::default())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Offered, E> {
        self.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Offered, D::Error> {
        deserializer.deserialize_str(self)
    }

    /// Borrowed from the response text when it can be (`visit_borrowed_str` comes here), so a
    /// value left out is never copied.
    fn visit_str<E: de::Error>(self, encoded: &str) -> Result<Offered, E> {
        let size = decoded_len(encoded);
        if size > self.room {
            return Ok(Offered::TooLarge(size));
        }
        // The error names no byte of the value (base64's own would quote one).
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| E::custom("a value of the credentials Secret's data is not valid base64"))?;
        Ok(Offered::Value(KeptValue::from_bytes(bytes)))
    }
}

/// The size `encoded` decodes to (exact for valid padded base64, as the API server writes it).
fn decoded_len(encoded: &str) -> usize {
    let padding = encoded.bytes().rev().take(2).take_while(|&b| b == b'=').count();
    (encoded.len().div_ceil(4) * 3).saturating_sub(padding)
}

/// The keys kept so far, chosen as they come: the same as sorting every entry by size and
/// keeping the longest prefix that fits [`MAX_KEPT_KEYS`] and [`MAX_KEPT_BYTES`], while holding
/// at most that prefix and one more value at any time.
#[derive(Default)]
struct Selection {
    /// Ascending by (size, key); within both bounds.
    kept: Vec<Candidate>,
    /// Sum of the sizes in `kept`.
    bytes: usize,
    /// The smallest of the entries left out, by (size, key); at most [`MAX_DROPPED_NAMES`].
    dropped: Vec<Left>,
    /// More entries were left out than `dropped` holds.
    more_dropped: bool,
}

struct Candidate {
    key: String,
    value: KeptValue,
    /// Key and (trimmed) value, in bytes.
    size: usize,
}

/// An entry left out, remembered by name.
struct Left {
    key: String,
    size: usize,
    /// Never decoded: over the budget on its own (always [`Dropped::TooLarge`]).
    alone_too_large: bool,
}

impl Selection {
    fn offer(&mut self, key: String, value: Offered) {
        // A key given twice (no API server sends that): the value read last counts.
        if let Some(at) = self.kept.iter().position(|c| c.key == key) {
            self.bytes -= self.kept.remove(at).size;
        }
        self.dropped.retain(|left| left.key != key);
        match value {
            Offered::TooLarge(value_size) => {
                let size = key.len() + value_size;
                self.leave_out(key, size, true);
            }
            Offered::Value(value) => {
                // Into its place, then the largest out while over a bound: `kept` stays the
                // longest prefix within both bounds of the entries seen so far, in (size, key)
                // order. An entry past that prefix stays past it, as entries coming later only
                // add to what comes before it.
                let size = key.len() + value.len();
                let at = self.kept.partition_point(|c| (c.size, c.key.as_str()) < (size, key.as_str()));
                self.kept.insert(at, Candidate { key, value, size });
                self.bytes += size;
                while self.kept.len() > MAX_KEPT_KEYS || self.bytes > MAX_KEPT_BYTES {
                    let Some(largest) = self.kept.pop() else { break };
                    self.bytes -= largest.size;
                    // Its value is freed here; only the name may be remembered.
                    self.leave_out(largest.key, largest.size, false);
                }
            }
        }
    }

    fn leave_out(&mut self, key: String, size: usize, alone_too_large: bool) {
        let left = Left { key, size, alone_too_large };
        if self.dropped.len() < MAX_DROPPED_NAMES {
            self.dropped.push(left);
            return;
        }
        self.more_dropped = true;
        // Remember the smallest names, whatever order the entries came in.
        if let Some(largest) = self.dropped.iter_mut().max_by(|a, b| (a.size, &a.key).cmp(&(b.size, &b.key)))
            && (left.size, &left.key) < (largest.size, &largest.key)
        {
            *largest = left;
        }
    }

    fn finish(self, metadata: ObjectMeta) -> CredentialsSecret {
        // Taking the entries smallest first, each one left out met either a full set of keys
        // (then so did every later one) or a budget too small for it.
        let full = self.kept.len() >= MAX_KEPT_KEYS;
        let mut dropped: Vec<_> = self
            .dropped
            .into_iter()
            .map(|left| (left.key, if full && !left.alone_too_large { Dropped::TooMany } else { Dropped::TooLarge }))
            .collect();
        let mut kept: Vec<_> = self.kept.into_iter().map(|c| (c.key, c.value)).collect();
        kept.shrink_to_fit();
        dropped.shrink_to_fit();
        CredentialsSecret { metadata, kept, dropped, more_dropped: self.more_dropped }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Decoded from the JSON the API server sends, as the watch decodes it.
    fn decode(data: serde_json::Value) -> CredentialsSecret {
        decode_text(&secret_text(&data.to_string()))
    }

    /// A Secret whose `data` is the JSON text given (its keys in the order written).
    fn secret_text(data: &str) -> String {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Secret",
                "metadata": {{"name": "creds", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                             "labels": {{"navigator.dev/credentials": "true"}}, "annotations": {{"a": "b"}},
                             "managedFields": [{{"manager": "m", "fieldsV1": {{"f:data": {{}}}}}}]}},
                "type": "Opaque", "data": {data}}}"#
        )
    }

    fn decode_text(text: &str) -> CredentialsSecret {
        serde_json::from_str(text).unwrap()
    }

    fn b64(value: &[u8]) -> String {
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
        assert_eq!(kept.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(kept.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("7"));
        assert!(kept.metadata.labels.is_none() && kept.metadata.annotations.is_none() && kept.metadata.managed_fields.is_none());
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

    /// A key and what `value` answers for it.
    type Answer = (String, Result<String, KeyProblem>);

    /// What is kept, as the rule says: every entry sorted by (size, key), the longest prefix
    /// within both bounds; and how many entries there were.
    fn by_the_rule(entries: &[(String, Vec<u8>)]) -> (Vec<Answer>, usize) {
        let mut sized: Vec<(usize, &String, String)> = entries
            .iter()
            .map(|(key, value)| {
                let text = String::from_utf8(value.clone()).expect("text in this test").trim().to_owned();
                (key.len() + text.len(), key, text)
            })
            .collect();
        sized.sort();
        let (mut kept, mut bytes) = (Vec::new(), 0);
        for (size, key, text) in &sized {
            if kept.len() == MAX_KEPT_KEYS || bytes + size > MAX_KEPT_BYTES {
                break;
            }
            bytes += size;
            kept.push(((*key).clone(), if text.is_empty() { Err(KeyProblem::Empty) } else { Ok(text.clone()) }));
        }
        (kept, sized.len())
    }

    #[test]
    fn the_keys_kept_do_not_depend_on_the_order_they_come_in() {
        // Pseudo-random Secrets (a fixed LCG): sizes around the bounds, each decoded from its
        // keys in three orders, compared with the rule applied to the whole Secret at once.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % below
        };
        for round in 0..200 {
            let n = 1 + next(40);
            let entries: Vec<(String, Vec<u8>)> = (0..n)
                .map(|i| {
                    let len = match next(4) {
                        0 => next(16),
                        1 => next(600),
                        2 => next(3000),
                        _ => next(12_000),
                    };
                    (format!("key-{i}-{}", "x".repeat(next(20))), vec![b'a' + (i % 26) as u8; len])
                })
                .collect();
            let (expected, total) = by_the_rule(&entries);
            let mut orders = vec![entries.clone(), entries.iter().rev().cloned().collect()];
            let mut shuffled = entries.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, next(i + 1));
            }
            orders.push(shuffled);
            for order in orders {
                let data: Vec<String> = order.iter().map(|(key, value)| format!("{:?}: {:?}", key, b64(value))).collect();
                let secret = decode_text(&secret_text(&format!("{{{}}}", data.join(", "))));
                assert!(secret.kept_bytes() <= MAX_KEPT_BYTES && secret.kept.len() <= MAX_KEPT_KEYS);
                for (key, value) in &expected {
                    assert_eq!(secret.value(key).map(str::to_owned), *value, "round {round}: key {key}");
                }
                assert_eq!(secret.kept.len(), expected.len(), "round {round}");
                // Every other key is left out: the smallest of them by name and with the reason,
                // the rest as "missing or left out".
                let full = expected.len() == MAX_KEPT_KEYS;
                let mut left: Vec<(usize, &String, KeyProblem)> = order
                    .iter()
                    .filter(|(key, _)| !expected.iter().any(|(k, _)| k == key))
                    .map(|(key, value)| {
                        let alone_too_large = value.len() > MAX_KEPT_BYTES - key.len();
                        let why = if full && !alone_too_large { KeyProblem::TooMany } else { KeyProblem::TooLarge };
                        (key.len() + value.len(), key, why)
                    })
                    .collect();
                left.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
                for (i, (_, key, why)) in left.iter().enumerate() {
                    let want = if i < MAX_DROPPED_NAMES { *why } else { KeyProblem::MissingOrDropped };
                    assert_eq!(secret.value(key), Err(want), "round {round}: key {key}");
                }
                assert_eq!(secret.more_dropped, total - expected.len() > MAX_DROPPED_NAMES, "round {round}");
            }
        }
    }

    #[test]
    fn a_value_over_the_budget_is_never_decoded() {
        // Not base64 at all: decoding it would fail, so it was not decoded.
        let not_base64 = "!".repeat(4 * (MAX_KEPT_BYTES / 3 + 8));
        let kept = decode_text(&secret_text(&format!(r#"{{"client_id": "{}", "huge": "{not_base64}"}}"#, b64(b"robot"))));
        assert_eq!(kept.value("client_id"), Ok("robot"));
        assert_eq!(kept.value("huge"), Err(KeyProblem::TooLarge));
        // A value within the budget is decoded, and one that is no base64 is an error naming no
        // byte of it.
        let error = serde_json::from_str::<CredentialsSecret>(&secret_text(r#"{"client_id": "c2Vj*mV0"}"#)).unwrap_err();
        assert!(error.to_string().contains("is not valid base64") && !error.to_string().contains('*'), "{error}");
    }

    #[test]
    fn a_value_is_measured_as_stored_once_it_is_over_the_budget() {
        // Changed with the bounded decoding: a short value wrapped in more whitespace than the
        // budget is too large (it used to be trimmed first); within the budget, it is trimmed.
        let wrapped = format!("robot{}", " ".repeat(MAX_KEPT_BYTES));
        let kept =
            decode(json!({"client_id": b64(wrapped.as_bytes()), "client_secret": b64(format!("s3cret{}", " ".repeat(4000)).as_bytes())}));
        assert_eq!(kept.value("client_id"), Err(KeyProblem::TooLarge));
        assert_eq!(kept.value("client_secret"), Ok("s3cret"));
        assert_eq!(kept.kept_bytes(), "client_secret".len() + 6);
    }

    #[test]
    fn null_and_absent_data_and_values() {
        assert_eq!(decode(serde_json::Value::Null).value("client_id"), Err(KeyProblem::Missing));
        let no_data: CredentialsSecret =
            serde_json::from_str(r#"{"metadata": {"name": "creds", "namespace": "team-a"}, "stringData": {"client_id": "robot"}}"#)
                .unwrap();
        assert_eq!(no_data.value("client_id"), Err(KeyProblem::Missing), "stringData is never returned by the API server");
        assert_eq!(no_data.metadata.name.as_deref(), Some("creds"));
        assert_eq!(decode(json!({"client_id": null})).value("client_id"), Err(KeyProblem::Empty));
        // Given twice (no API server does): the value read last counts.
        let twice = decode_text(&secret_text(&format!(r#"{{"client_id": "{}", "client_id": "{}"}}"#, b64(b"first"), b64(b"second"))));
        assert_eq!(twice.value("client_id"), Ok("second"));
        assert_eq!(twice.kept.len(), 1);
        // Decoded from an already parsed value (owned strings) the same as from text.
        let from_value: CredentialsSecret =
            serde_json::from_str::<serde_json::Value>(&secret_text(&json!({"client_id": b64(b"robot")}).to_string()))
                .and_then(serde_json::from_value)
                .unwrap();
        assert_eq!(from_value.value("client_id"), Ok("robot"));
    }
}
