//! The test API server against the transcripts recorded from a real kube-apiserver v1.28
//! (`fixtures/k8s-reference`, 01–38; `apiserver.rs` checks 01–18 in more detail by hand).
//!
//! Each test reads its transcript, sets up the state the recording was made in, sends the
//! recorded request with a real HTTP client and compares the status code and the fields of the
//! answer that clients act on (for `Status` bodies: status, reason, code, message, details.name,
//! group, kind and causes). uids, timestamps and resourceVersions naturally differ.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use common::Watch;
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, FieldError};

/// What the recordings were made with; the server derives Update managers from it.
const USER_AGENT: &str = "python-requests/2.31.0";
const SECRETS: &str = "/api/v1/namespaces/ref2/secrets";
const TOKEN: &str = "dG9rZW4=";

/// Fails the test instead of letting it hang.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("test exceeded its time bound")
}

// --- transcripts ------------------------------------------------------------------------------

/// One recorded exchange.
struct Transcript {
    file: String,
    method: String,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(String, String)>,
    body: String,
    status: u16,
    response: String,
}

/// Reads `fixtures/k8s-reference/NN-*.txt`: `#` comments, the request line, headers, a blank
/// line, the body, then `--- response: HTTP NNN`, headers, a blank line and the response body.
fn transcript(number: u32) -> Transcript {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-reference");
    let prefix = format!("{number:02}-");
    let path = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("directory entry").path())
        .find(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no transcript {prefix}* in {}", dir.display()));
    let text = std::fs::read_to_string(&path).expect("read transcript");
    let file = path.file_name().unwrap().to_string_lossy().into_owned();

    let (request, response) = text.split_once("\n--- response: HTTP ").unwrap_or_else(|| panic!("{file}: no response marker"));
    let mut lines = request.lines().skip_while(|line| line.starts_with('#') || line.trim().is_empty());
    let request_line = lines.next().unwrap_or_else(|| panic!("{file}: no request line"));
    let (method, target) = request_line.split_once(' ').unwrap_or_else(|| panic!("{file}: bad request line"));
    let headers = lines.by_ref().take_while(|line| !line.trim().is_empty()).map(header).collect();
    let body = lines.collect::<Vec<_>>().join("\n").trim().to_owned();

    let mut lines = response.lines();
    let status = lines.next().and_then(|code| code.trim().parse().ok()).unwrap_or_else(|| panic!("{file}: bad status"));
    lines.by_ref().take_while(|line| !line.trim().is_empty()).for_each(drop);
    let response = lines.collect::<Vec<_>>().join("\n").trim().to_owned();
    Transcript { file, method: method.to_owned(), target: target.to_owned(), headers, body, status, response }
}

fn header(line: &str) -> (String, String) {
    let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
    (name.trim().to_owned(), value.trim().to_owned())
}

impl Transcript {
    fn request_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{}: request body: {e}", self.file))
    }

    fn response_json(&self) -> Value {
        serde_json::from_str(&self.response).unwrap_or_else(|e| panic!("{}: response body: {e}", self.file))
    }

    /// A watch response: one event per line.
    fn events(&self) -> Vec<Value> {
        self.response.lines().map(|line| serde_json::from_str(line).expect("a watch line is JSON")).collect()
    }
}

// --- client -----------------------------------------------------------------------------------

struct Api {
    server: ApiServer,
    http: reqwest::Client,
}

impl Api {
    /// A server with the namespace the recordings were made in.
    async fn start() -> Api {
        // reqwest is built without a crypto provider; ring is the one the workspace uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().user_agent(USER_AGENT).build().expect("build client");
        let server = ApiServer::start().await;
        server.insert(namespace("ref2"));
        Api { server, http }
    }

    async fn send(&self, method: &str, target: &str, headers: &[(String, String)], body: String) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{target}", self.server.url()));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.body(body);
        }
        let response = request.send().await.expect("send request");
        let code = response.status().as_u16();
        let bytes = response.bytes().await.expect("read body");
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The recorded request, as recorded.
    async fn replay(&self, t: &Transcript) -> (u16, Value) {
        self.send(&t.method, &t.target, &t.headers, t.body.clone()).await
    }

    /// The recorded request, with another path and query.
    async fn replay_at(&self, t: &Transcript, target: &str) -> (u16, Value) {
        self.send(&t.method, target, &t.headers, t.body.clone()).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("POST", path, &json_header("application/json"), body.to_string()).await
    }

    async fn merge(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("PATCH", path, &json_header("application/merge-patch+json"), body.to_string()).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, &[], String::new()).await
    }

    /// Creates a Secret through the API, as the recordings' set-up did.
    async fn create_secret(&self, namespace: &str, body: Value) {
        let (code, created) = self.post(&format!("/api/v1/namespaces/{namespace}/secrets"), &body).await;
        assert_eq!(code, 201, "set-up: {created}");
    }
}

fn json_header(content_type: &str) -> Vec<(String, String)> {
    vec![("Content-Type".to_owned(), content_type.to_owned())]
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn secret(name: &str, extra: Value) -> Value {
    let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": {"token": TOKEN}});
    for (key, value) in extra.as_object().expect("extra fields") {
        secret[key] = value.clone();
    }
    secret
}

// --- comparisons ------------------------------------------------------------------------------

/// The parts of a `Status` that clients act on.
fn significant(status: &Value) -> Value {
    let details = &status["details"];
    let causes: Vec<Value> = details["causes"]
        .as_array()
        .map(|causes| causes.iter().map(|c| json!({"reason": c["reason"], "field": c["field"], "message": c["message"]})).collect())
        .unwrap_or_default();
    json!({
        "kind": status["kind"],
        "apiVersion": status["apiVersion"],
        "status": status["status"],
        "reason": status["reason"],
        "code": status["code"],
        "message": status["message"],
        "details": {"name": details["name"], "group": details["group"], "kind": details["kind"], "causes": causes},
    })
}

/// Replays `t` and compares the answer with the recorded `Status`.
async fn assert_replays_status(api: &Api, t: &Transcript) {
    let (code, body) = api.replay(t).await;
    assert_status(t, code, &body, &t.response_json());
}

fn assert_status(t: &Transcript, code: u16, body: &Value, expected: &Value) {
    assert_eq!(code, t.status, "{}: status code; body {body}", t.file);
    assert_eq!(significant(body), significant(expected), "{}: Status body", t.file);
}

/// managedFields with the timestamps taken out.
fn managed_without_time(obj: &Value) -> Value {
    let mut entries = obj["metadata"]["managedFields"].clone();
    for entry in entries.as_array_mut().into_iter().flatten() {
        entry.as_object_mut().expect("entry").remove("time");
    }
    entries
}

fn names(list: &Value) -> Vec<&str> {
    list["items"].as_array().expect("items").iter().map(|item| item["metadata"]["name"].as_str().expect("name")).collect()
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse().ok()).unwrap_or_else(|| panic!("no resourceVersion in {obj}"))
}

/// Replaces one query parameter of a recorded target.
fn with_query(target: &str, key: &str, value: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| if p.split('=').next() == Some(key) { format!("{key}={value}") } else { p.to_owned() })
        .collect();
    format!("{path}?{}", params.join("&"))
}

/// Event fields the real server fills in that no client reads.
const EVENT_DEFAULTS: [&str; 3] = ["deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"];

/// An object answer against the recorded one: the recorded top-level fields, identity metadata,
/// and (`with_managed`) managedFields without their times.
fn assert_object(t: &Transcript, code: u16, body: &Value, with_managed: bool) {
    let expected = t.response_json();
    assert_eq!(code, t.status, "{}: status code; body {body}", t.file);
    for (field, value) in expected.as_object().expect("an object") {
        if field != "metadata" && !EVENT_DEFAULTS.contains(&field.as_str()) {
            assert_eq!(&body[field], value, "{}: {field}", t.file);
        }
    }
    for field in ["name", "namespace", "labels", "annotations", "generateName", "generation"] {
        if field != "name" || expected["metadata"].get("generateName").is_none() {
            assert_eq!(body["metadata"][field], expected["metadata"][field], "{}: metadata.{field}", t.file);
        }
    }
    if with_managed {
        assert_eq!(managed_without_time(body), managed_without_time(&expected), "{}: managedFields", t.file);
    }
}

/// Replays a single-request transcript and compares the answer by its kind.
async fn replay_and_compare(api: &Api, number: u32) -> Value {
    let t = transcript(number);
    let (code, body) = api.replay(&t).await;
    let expected = t.response_json();
    match expected["kind"].as_str().unwrap_or_default() {
        "Status" => assert_status(&t, code, &body, &expected),
        kind if kind.ends_with("List") => {
            assert_eq!(code, t.status, "{}", t.file);
            assert_eq!((body["kind"].as_str(), names(&body)), (Some(kind), names(&expected)), "{}", t.file);
            assert_eq!(body["metadata"].get("continue"), None, "{}", t.file);
        }
        // Events: the real server owns `regarding` atomically; this server owns its members.
        "Event" => assert_object(&t, code, &body, false),
        _ => assert_object(&t, code, &body, true),
    }
    body
}

/// The stand-in CRD's only schema rule (orgId is a GUID), for 14.
fn org_id_errors(obj: &Value) -> Vec<FieldError> {
    let org = obj["spec"]["orgId"].as_str().unwrap_or_default();
    let groups: Vec<&str> = org.split('-').collect();
    let guid = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if guid {
        return Vec::new();
    }
    let pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
    vec![FieldError { field: "spec.orgId".into(), message: format!("Invalid value: {org:?}: spec.orgId in body should match '{pattern}'") }]
}

// --- 01-18: the basic calls, in the order recorded --------------------------------------------

#[tokio::test]
async fn ref_01_to_18_replayed_in_order() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(namespace("ref"));
        api.server.set_validator("navigatortokens", org_id_errors);
        api.server.set_bookmark_interval(Duration::from_millis(200));

        for number in 1..=4 {
            replay_and_compare(&api, number).await;
        }
        let watch_from = api.server.resource_version();
        let applied = replay_and_compare(&api, 6).await;
        let again = replay_and_compare(&api, 7).await;
        assert_eq!(rv(&again), rv(&applied), "07: an identical apply writes nothing");
        for number in 8..=11 {
            replay_and_compare(&api, number).await;
        }

        // 05: a watch from before 06 replays 06, 09 and 11, then bookmarks.
        let t = transcript(5);
        let target = with_query(&t.target, "resourceVersion", &watch_from.to_string());
        let response = api.http.get(format!("{}{target}", api.server.url())).send().await.expect("open watch");
        assert_eq!(response.status().as_u16(), t.status);
        let mut lines = Watch::new(response);
        for want in t.events() {
            let got = lines.next().await.expect("05: the watch ended early");
            assert_eq!(got["type"], want["type"], "05: {got}");
            if want["type"] == "BOOKMARK" {
                let mut shape = want.clone();
                shape["object"]["metadata"]["resourceVersion"] = json!(api.server.resource_version().to_string());
                assert_eq!(got, shape, "05: bookmark");
            } else {
                for field in ["kind", "apiVersion", "data", "type"] {
                    assert_eq!(got["object"][field], want["object"][field], "05: {field} of {got}");
                }
                assert_eq!(got["object"]["metadata"]["name"], want["object"]["metadata"]["name"]);
                assert_eq!(managed_without_time(&got["object"]), managed_without_time(&want["object"]), "05: managedFields");
            }
        }

        // 12: a watch from a compacted resourceVersion gets an ERROR event with 410 Expired.
        api.server.compact();
        let t = transcript(12);
        let response = api.http.get(format!("{}{}", api.server.url(), t.target)).send().await.expect("open watch");
        assert_eq!(response.status().as_u16(), t.status);
        let error = Watch::new(response).next().await.expect("12: an ERROR event");
        let recorded = t.response.replace("(741)", &format!("({})", api.server.resource_version()));
        let want: Value = serde_json::from_str(&recorded).unwrap();
        assert_eq!(error["type"], want["type"]);
        assert_status(&t, t.status, &error["object"], &want["object"]);

        for number in 13..=18 {
            replay_and_compare(&api, number).await;
        }
    })
    .await;
}

// --- names, labels, annotations ---------------------------------------------------------------

#[tokio::test]
async fn ref_19_generate_name_must_be_a_valid_prefix() {
    bounded(async {
        let api = Api::start().await;
        let t = transcript(19);
        let (code, body) = api.replay(&t).await;
        // The real server generates the name before validating: the answer names it.
        let generated = body["details"]["name"].as_str().unwrap_or_else(|| panic!("no generated name in {body}")).to_owned();
        let suffix = generated.strip_prefix("t1.").expect("the generated name starts with generateName");
        assert_eq!(suffix.len(), 5, "{generated}");
        let expected: Value = serde_json::from_str(&t.response.replace("t1.gt5cf", &generated)).unwrap();
        assert_status(&t, code, &body, &expected);
        assert!(api.server.list("events.k8s.io/v1", "events", Some("ref2")).is_empty(), "nothing was stored");

        // A trailing '-' is how prefixes end.
        let mut event = t.request_json();
        event["metadata"]["generateName"] = json!("t1-");
        let (code, created) = api.post("/apis/events.k8s.io/v1/namespaces/ref2/events", &event).await;
        assert_eq!(code, 201, "{created}");
        assert!(created["metadata"]["name"].as_str().unwrap().starts_with("t1-"));
    })
    .await;
}

#[tokio::test]
async fn ref_20_event_with_an_explicit_dotted_name() {
    bounded(async {
        let api = Api::start().await;
        let t = transcript(20);
        let (code, body) = api.replay(&t).await;
        assert_eq!(code, t.status, "{body}");
        let expected = t.response_json();
        for field in
            ["kind", "apiVersion", "eventTime", "reportingController", "reportingInstance", "action", "reason", "note", "type", "regarding"]
        {
            assert_eq!(body[field], expected[field], "{field}");
        }
        assert_eq!(body["metadata"]["name"], expected["metadata"]["name"]);
        assert_eq!(body["metadata"]["namespace"], expected["metadata"]["namespace"]);
    })
    .await;
}

#[tokio::test]
async fn ref_21_secret_names_are_dns_subdomains() {
    bounded(async {
        let api = Api::start().await;
        assert_replays_status(&api, &transcript(21)).await;
        assert!(api.server.list("v1", "secrets", Some("ref2")).is_empty());
    })
    .await;
}

#[tokio::test]
async fn ref_22_23_label_keys_and_values_are_validated() {
    bounded(async {
        let api = Api::start().await;
        assert_replays_status(&api, &transcript(22)).await;
        assert_replays_status(&api, &transcript(23)).await;
        assert!(api.server.list("v1", "secrets", Some("ref2")).is_empty(), "nothing was created");

        // One cause per bad label, all in one answer.
        let t = transcript(22);
        let two_bad = t.body.replace(r#"{"bad key!": "x"}"#, r#"{"bad key!": "x", "ok": "-bad value"}"#);
        let (code, body) = api.send(&t.method, &t.target, &t.headers, two_bad).await;
        assert_eq!(code, 422);
        assert_eq!(body["details"]["causes"].as_array().unwrap().len(), 2, "{body}");
        assert!(body["message"].as_str().unwrap().contains("is invalid: [metadata.labels: Invalid value: \"bad key!\""), "{body}");

        // Updates are checked too.
        api.create_secret("ref2", secret("lbl", json!({}))).await;
        let (code, _) = api.merge(&format!("{SECRETS}/lbl"), &json!({"metadata": {"labels": {"bad key!": "x"}}})).await;
        assert_eq!(code, 422);
    })
    .await;
}

#[tokio::test]
async fn ref_24_annotations_are_at_most_256k() {
    bounded(async {
        let api = Api::start().await;
        let t = transcript(24);
        // The recording shortened the 262,200-character annotation; restore it.
        let mut request = t.request_json();
        let shortened = request["metadata"]["annotations"]["a"].as_str().unwrap();
        assert!(shortened.contains("262,200 characters of x"), "{shortened}");
        request["metadata"]["annotations"]["a"] = json!("x".repeat(262_200));
        let (code, body) = api.send(&t.method, &t.target, &t.headers, request.to_string()).await;
        assert_status(&t, code, &body, &t.response_json());

        // Exactly at the limit is fine: keys count too.
        request["metadata"]["annotations"]["a"] = json!("x".repeat(256 * 1024 - 1));
        let (code, body) = api.send(&t.method, &t.target, &t.headers, request.to_string()).await;
        assert_eq!(code, 201, "{body}");
    })
    .await;
}

// --- Secret rules -----------------------------------------------------------------------------

#[tokio::test]
async fn ref_25_26_immutable_secrets_keep_their_data() {
    bounded(async {
        let api = Api::start().await;
        api.create_secret("ref2", secret("frozen", json!({"immutable": true}))).await;
        assert_replays_status(&api, &transcript(25)).await;
        assert_eq!(api.server.get("v1", "secrets", Some("ref2"), "frozen").unwrap()["data"]["token"], TOKEN);

        // Metadata may still change.
        let t = transcript(26);
        let (code, body) = api.replay(&t).await;
        assert_eq!(code, t.status, "{body}");
        let expected = t.response_json();
        for field in ["kind", "apiVersion", "immutable", "data", "type"] {
            assert_eq!(body[field], expected[field], "{field}");
        }
        assert_eq!(body["metadata"]["labels"], expected["metadata"]["labels"]);
        assert_eq!(managed_without_time(&body), managed_without_time(&expected));

        // And `immutable` cannot be taken back.
        let (code, body) = api.merge(&format!("{SECRETS}/frozen"), &json!({"immutable": false})).await;
        assert_eq!(code, 422);
        assert_eq!(body["message"], "Secret \"frozen\" is invalid: immutable: Forbidden: field is immutable when `immutable` is set");
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueForbidden");
    })
    .await;
}

#[tokio::test]
async fn ref_27_secret_type_cannot_change() {
    bounded(async {
        let api = Api::start().await;
        api.create_secret("ref2", secret("typed", json!({}))).await;
        assert_replays_status(&api, &transcript(27)).await;
        assert_eq!(api.server.get("v1", "secrets", Some("ref2"), "typed").unwrap()["type"], "Opaque");
    })
    .await;
}

// --- lists and watches ------------------------------------------------------------------------

/// The Secrets of ref2 when 28–32 were recorded.
async fn paging_state(api: &Api) {
    api.create_secret("ref2", secret("frozen", json!({"immutable": true}))).await;
    api.create_secret("ref2", secret("typed", json!({}))).await;
    for name in ["page-0", "page-1", "page-2"] {
        api.create_secret("ref2", secret(name, json!({}))).await;
    }
}

fn assert_page(t: &Transcript, code: u16, page: &Value, current_rv: u64) {
    let expected = t.response_json();
    assert_eq!(code, t.status, "{}: {page}", t.file);
    assert_eq!(page["kind"], expected["kind"], "{}", t.file);
    assert_eq!(names(page), names(&expected), "{}", t.file);
    let (meta, expected_meta) = (&page["metadata"], &expected["metadata"]);
    assert_eq!(meta["continue"].is_string(), expected_meta["continue"].is_string(), "{}: continue", t.file);
    assert_eq!(meta["remainingItemCount"], expected_meta["remainingItemCount"], "{}: remainingItemCount", t.file);
    assert_eq!(meta["resourceVersion"], json!(current_rv.to_string()), "{}: resourceVersion", t.file);
}

#[tokio::test]
async fn ref_28_to_31_list_paging() {
    bounded(async {
        let api = Api::start().await;
        paging_state(&api).await;
        let current = api.server.resource_version();

        let first = transcript(28);
        let (code, page) = api.replay(&first).await;
        assert_page(&first, code, &page, current);

        // Continue tokens are the server's own: the second page follows ours.
        let second = transcript(29);
        let token = page["metadata"]["continue"].as_str().unwrap();
        let (code, page) = api.replay_at(&second, &with_query(&second.target, "continue", token)).await;
        assert_page(&second, code, &page, current);

        let cached = transcript(30);
        let (code, page) = api.replay(&cached).await;
        assert_page(&cached, code, &page, current);

        let not_older = transcript(31);
        let target = with_query(&not_older.target, "resourceVersion", &current.to_string());
        let (code, page) = api.replay_at(&not_older, &target).await;
        assert_page(&not_older, code, &page, current);

        // With a selector the remaining count is unknown, so it is left out.
        let (_, selected) = api.get(&format!("{SECRETS}?limit=1&labelSelector=a!%3Db")).await;
        assert!(selected["metadata"]["continue"].is_string());
        assert!(selected["metadata"].get("remainingItemCount").is_none(), "{selected}");
    })
    .await;
}

#[tokio::test]
async fn ref_32_watch_with_label_selector_sees_objects_leave_and_enter() {
    bounded(async {
        let api = Api::start().await;
        api.server.set_bookmark_interval(Duration::from_millis(200));
        paging_state(&api).await;
        let t = transcript(32);
        let start = api.server.resource_version();
        let target = with_query(&t.target, "resourceVersion", &start.to_string());
        let response = api.http.get(format!("{}{target}", api.server.url())).send().await.expect("open watch");
        assert_eq!(response.status().as_u16(), t.status);

        // What happened during the recording: "managed" created with the label, then relabelled;
        // page-0 labelled.
        let label = json!({"app.kubernetes.io/managed-by": "navigator-token-operator"});
        api.create_secret("ref2", secret("managed", json!({"metadata": {"name": "managed", "labels": label}}))).await;
        let (_, relabelled) =
            api.merge(&format!("{SECRETS}/managed"), &json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})).await;
        api.merge(&format!("{SECRETS}/page-0"), &json!({"metadata": {"labels": label}})).await;

        let expected = t.events();
        let mut lines = Watch::new(response);
        let mut changes = Vec::new();
        let mut bookmark = None;
        while changes.len() < 3 || bookmark.is_none() {
            let event = lines.next().await.expect("the watch ended early");
            if event["type"] == "BOOKMARK" {
                if changes.len() == 3 {
                    bookmark = Some(event);
                }
            } else {
                changes.push(event);
            }
        }
        let recorded: Vec<&Value> = expected.iter().filter(|e| e["type"] != "BOOKMARK").collect();
        assert_eq!(changes.len(), recorded.len());
        for (got, want) in changes.iter().zip(&recorded) {
            assert_eq!(got["type"], want["type"]);
            assert_eq!(got["object"]["metadata"]["name"], want["object"]["metadata"]["name"]);
            // A DELETED for leaving the selector still shows the labels that matched.
            assert_eq!(got["object"]["metadata"]["labels"], want["object"]["metadata"]["labels"], "{got}");
        }
        assert_eq!(rv(&changes[1]["object"]), rv(&relabelled), "DELETED carries the relabelling's resourceVersion");

        let bookmark = bookmark.unwrap();
        let recorded = expected.iter().find(|e| e["type"] == "BOOKMARK").expect("a recorded bookmark");
        let mut shape = recorded.clone();
        shape["object"]["metadata"]["resourceVersion"] = json!(api.server.resource_version().to_string());
        assert_eq!(bookmark, shape);
    })
    .await;
}

// --- authorization and admission --------------------------------------------------------------

#[tokio::test]
async fn ref_33_rbac_denial() {
    bounded(async {
        let api = Api::start().await;
        api.server.forbid("list", "secrets");
        let t = transcript(33);
        assert_replays_status(&api, &t).await;

        // Without impersonation the server names its configured user; other verbs pass.
        api.server.set_user("system:serviceaccount:ops:navigator-token-operator");
        let (code, body) = api.get(&format!("{SECRETS}/x")).await;
        assert_eq!(code, 404, "get is not denied: {body}");
        api.server.forbid("get", "secrets");
        let (code, body) = api.get(&format!("{SECRETS}/x")).await;
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "secrets \"x\" is forbidden: User \"system:serviceaccount:ops:navigator-token-operator\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ref2\""
        );
        assert_eq!(body["details"], json!({"name": "x", "kind": "secrets"}));
        api.server.forbid("*", "navigatortokens/status");
        let (code, body) = api.get("/apis/navigator.dev/v1alpha1/namespaces/ref2/navigatortokens/t/status").await;
        assert_eq!(code, 403);
        assert!(body["message"].as_str().unwrap().contains("cannot get resource \"navigatortokens/status\" in API group \"navigator.dev\""));
        assert_eq!(body["details"], json!({"name": "t", "group": "navigator.dev", "kind": "navigatortokens"}));

        api.server.allow("list", "secrets");
        assert_eq!(api.replay(&t).await.0, 200);
        api.server.allow_all();
        assert_eq!(api.get(&format!("{SECRETS}/x")).await.0, 404);
    })
    .await;
}

#[tokio::test]
async fn ref_34_status_apply_to_a_missing_object() {
    bounded(async {
        let api = Api::start().await;
        assert_replays_status(&api, &transcript(34)).await;
        assert!(api.server.get("navigator.dev/v1alpha1", "navigatortokens", Some("ref2"), "missing").is_none(), "nothing was created");
    })
    .await;
}

#[tokio::test]
async fn ref_35_writes_into_a_missing_namespace() {
    bounded(async {
        let api = Api::start().await;
        let t = transcript(35);
        assert_replays_status(&api, &t).await;
        // A plain create gets the same answer.
        let (code, body) = api.post("/api/v1/namespaces/no-such-ns/secrets", &secret("tok", json!({}))).await;
        assert_status(&t, code, &body, &t.response_json());
        // Reads are not admission's business: an empty list.
        let (code, list) = api.get("/api/v1/namespaces/no-such-ns/secrets").await;
        assert_eq!((code, names(&list).len()), (200, 0));
        // An object inserted directly into a missing namespace cannot be updated through the API.
        api.server.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stray", "namespace": "no-such-ns"}}));
        let (code, _) = api.merge("/api/v1/namespaces/no-such-ns/secrets/stray", &json!({"data": {"a": "YQ=="}})).await;
        assert_eq!(code, 404);

        api.server.insert(namespace("no-such-ns"));
        assert_eq!(api.replay(&t).await.0, 201);
    })
    .await;
}

#[tokio::test]
async fn ref_36_resource_quota_counts_secrets() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(namespace("ref2-quota"));
        let quota = |hard: Value| {
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "secrets", "namespace": "ref2-quota"},
                "spec": {"hard": hard}
            })
        };
        api.server.insert(quota(json!({"count/secrets": "1"})));
        api.create_secret("ref2-quota", secret("existing", json!({}))).await;
        let t = transcript(36);
        assert_replays_status(&api, &t).await;

        // Updates are not counted.
        let (code, _) = api.merge("/api/v1/namespaces/ref2-quota/secrets/existing", &json!({"data": {"token": "bmV3"}})).await;
        assert_eq!(code, 200);
        // The legacy name counts too, and every exceeded limit is listed.
        api.server.insert(quota(json!({"count/secrets": "1", "secrets": 1})));
        let (code, body) = api.replay(&t).await;
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "secrets \"tok\" is forbidden: exceeded quota: secrets, requested: count/secrets=1,secrets=1, used: count/secrets=1,secrets=1, limited: count/secrets=1,secrets=1"
        );

        api.server.insert(quota(json!({"count/secrets": "2"})));
        assert_eq!(api.replay(&t).await.0, 201);
    })
    .await;
}

#[tokio::test]
async fn ref_37_38_no_creates_in_a_terminating_namespace() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(namespace("ref2-terminating"));
        api.create_secret("ref2-terminating", secret("old", json!({}))).await;
        api.server.terminate_namespace("ref2-terminating");

        assert_replays_status(&api, &transcript(37)).await;
        assert_replays_status(&api, &transcript(38)).await;
        let (code, _) = api.post("/api/v1/namespaces/ref2-terminating/secrets", &secret("tok", json!({}))).await;
        assert_eq!(code, 403);

        // Objects already there can still be updated (and deleted) while it terminates.
        let (code, body) = api.merge("/api/v1/namespaces/ref2-terminating/secrets/old", &json!({"metadata": {"labels": {"a": "b"}}})).await;
        assert_eq!(code, 200, "{body}");
        let ns = api.server.get("v1", "namespaces", None, "ref2-terminating").expect("the namespace stays");
        assert!(ns["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(ns["status"]["phase"], "Terminating");
    })
    .await;
}
