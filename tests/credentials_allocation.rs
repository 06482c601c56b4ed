//! Decoding a credentials Secret allocates what the cache keeps, not what the tenant stored: a
//! Secret with a 1 MiB value, or with 1 MiB spread over many keys, is decoded (as kube decodes
//! a watch event or a list page, from the response text) with a peak of a few KiB on top of the
//! text itself. Its own test binary: it installs a recording global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use base64::Engine;
use kube::api::WatchEvent;
use kube::core::ObjectList;
use navigator_token_operator::controller::credentials::{CredentialsSecret, KeyProblem, MAX_KEPT_BYTES};
use serde_json::json;

/// Counts the bytes live on the current thread while it records, and their peak. Per thread, so
/// that tests running at once do not count each other's allocations.
struct Recording;

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    // `try_with`: allocations while a thread's locals are torn down are not counted.
    let _ = RECORDING.try_with(|recording| {
        if recording.get() {
            let live = LIVE.with(|live| {
                live.set(live.get() + delta);
                live.get()
            });
            PEAK.with(|peak| peak.set(peak.get().max(live)));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are touched.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `f` and returns its result with the peak of bytes allocated (and not yet freed) meanwhile.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    RECORDING.with(|recording| recording.set(true));
    let result = f();
    RECORDING.with(|recording| recording.set(false));
    (result, PEAK.with(Cell::get).max(0) as usize)
}

/// What a decode may allocate: the kept part (at most 8 KiB of values and their names) and its
/// bookkeeping, nowhere near the 1 MiB stored.
const BOUND: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

fn b64(value: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

/// A credentials Secret as the API server sends it, with `data` as given.
fn secret(name: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"), "resourceVersion": "42",
                     "labels": {"navigator.dev/credentials": "true"},
                     "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:data": {".": {}, "f:client_id": {}, "f:client_secret": {}, "f:padding": {}}}}]},
        "data": data})
}

/// Client credentials next to a padding key that takes the Secret to the API server's 1 MiB.
fn padded(name: &str) -> serde_json::Value {
    secret(name, json!({"client_id": b64(b"robot"), "client_secret": b64(b"s3cret-value"), "padding": b64(&vec![b'p'; MIB - 1024])}))
}

fn assert_serves_credentials(secret: &CredentialsSecret) {
    assert_eq!(secret.value("client_id"), Ok("robot"));
    assert_eq!(secret.value("client_secret"), Ok("s3cret-value"));
    assert_eq!(secret.value("padding"), Err(KeyProblem::TooLarge), "named, so that a spec using it is told why");
    assert!(secret.kept_bytes() <= MAX_KEPT_BYTES);
    assert!(!format!("{secret:?}").contains("s3cret"), "{secret:?}");
}

#[test]
fn a_secret_with_a_1_mib_value_is_decoded_in_a_few_kib() {
    let text = padded("creds").to_string();
    assert!(text.len() > MIB);
    let (decoded, peak) = peak_of(|| serde_json::from_str::<CredentialsSecret>(&text));
    let decoded = decoded.unwrap();
    assert_serves_credentials(&decoded);
    assert!(peak < BOUND, "decoding a Secret of {} bytes allocated a peak of {peak} bytes", text.len());
}

#[test]
fn a_watch_event_and_a_list_page_are_decoded_in_a_few_kib() {
    // As kube decodes them: a watch event line, and a list page (of 4 here, though the operator
    // asks for pages of 1: decoding a page holds nothing of its Secrets but what is kept).
    let event = json!({"type": "ADDED", "object": padded("creds")}).to_string();
    let (decoded, peak) = peak_of(|| serde_json::from_str::<WatchEvent<CredentialsSecret>>(&event));
    match decoded.unwrap() {
        WatchEvent::Added(secret) => assert_serves_credentials(&secret),
        other => panic!("not an ADDED event: {:?}", std::mem::discriminant(&other)),
    }
    assert!(peak < BOUND, "a watch event: peak {peak} bytes");

    let page = json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "43", "continue": "c"},
        "items": (0..4).map(|i| padded(&format!("creds-{i}"))).collect::<Vec<_>>()})
    .to_string();
    assert!(page.len() > 4 * MIB);
    let (decoded, peak) = peak_of(|| serde_json::from_str::<ObjectList<CredentialsSecret>>(&page));
    let decoded = decoded.unwrap();
    assert_eq!(decoded.items.len(), 4);
    decoded.items.iter().for_each(assert_serves_credentials);
    assert!(peak < 4 * BOUND, "a list page of 4: peak {peak} bytes");
}

#[test]
fn a_mib_spread_over_many_keys_is_decoded_in_a_few_kib() {
    // 128 values of 8,150 bytes: each would fit the budget alone, together they are 1 MiB.
    let mut data = serde_json::Map::new();
    data.insert("client_id".into(), json!(b64(b"robot")));
    data.insert("client_secret".into(), json!(b64(b"s3cret-value")));
    for i in 0..128 {
        data.insert(format!("medium-{i:03}"), json!(b64(&[b'm'; 8150])));
    }
    let text = secret("medium", serde_json::Value::Object(data)).to_string();
    let (decoded, peak) = peak_of(|| serde_json::from_str::<CredentialsSecret>(&text));
    let decoded = decoded.unwrap();
    assert_eq!(decoded.value("client_secret"), Ok("s3cret-value"));
    assert_eq!(decoded.value("medium-000"), Err(KeyProblem::TooLarge));
    assert!(peak < BOUND, "128 values of 8,150 bytes: peak {peak} bytes");

    // 60,000 keys of one byte: the names are not all held either.
    let mut data = serde_json::Map::new();
    for i in 0..60_000 {
        data.insert(format!("k{i:05}"), json!(b64(b"x")));
    }
    let text = secret("many", serde_json::Value::Object(data)).to_string();
    let (decoded, peak) = peak_of(|| serde_json::from_str::<CredentialsSecret>(&text));
    let decoded = decoded.unwrap();
    assert_eq!(decoded.value("k00000"), Ok("x"));
    assert_eq!(decoded.value("k00015"), Ok("x"));
    assert_eq!(decoded.value("k00016"), Err(KeyProblem::TooMany));
    assert_eq!(decoded.value("k59999"), Err(KeyProblem::MissingOrDropped));
    assert!(peak < BOUND, "60,000 keys: peak {peak} bytes");
}
