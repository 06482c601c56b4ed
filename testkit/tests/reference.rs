//! The transcripts recorded from a real kube-apiserver v1.28 (`fixtures/k8s-reference`, 01–38;
//! `apiserver.rs` checks 01–18 in more detail by hand), replayed against the test API server, or
//! against the genuine kube-apiserver `NAVIGATOR_TEST_KUBECONFIG` names (CI runs both), so that a
//! transcript that stops being true on another Kubernetes version is noticed too.
//!
//! Each test reads its transcript, sets up the state the recording was made in, sends the
//! recorded request with a real HTTP client and compares the status code and the fields of the
//! answer that clients act on (for `Status` bodies: status, reason, code, message, details.name,
//! group, kind and causes). uids, timestamps and resourceVersions naturally differ. Each test
//! renames the recordings' namespaces to its own, so that tests share a genuine server.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use common::Watch;
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, FieldError};

/// What the recordings were made with; the server derives Update managers from it.
const USER_AGENT: &str = "python-requests/2.31.0";
const TOKEN: &str = "dG9rZW4=";

/// Names the kubeconfig of a genuine API server to replay against.
const KUBECONFIG_VAR: &str = "NAVIGATOR_TEST_KUBECONFIG";
/// The Kubernetes minor version the recordings were made with.
const RECORDED_MINOR: u32 = 28;
/// The namespaces the recordings were made in; each test renames them to its own.
const RECORDED_NAMESPACES: [&str; 5] = ["ref", "ref2", "ref2-quota", "ref2-terminating", "no-such-ns"];

/// Fails the test instead of letting it hang.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test exceeded its time bound")
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
/// Namespace names are `rename`d.
fn read_transcript(number: u32, rename: impl Fn(&str) -> String) -> Transcript {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s-reference");
    let prefix = format!("{number:02}-");
    let path = std::fs::read_dir(&dir)
        .expect("fixtures directory")
        .map(|entry| entry.expect("directory entry").path())
        .find(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no transcript {prefix}* in {}", dir.display()));
    let text = rename(&std::fs::read_to_string(&path).expect("read transcript"));
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

// --- servers ----------------------------------------------------------------------------------

/// What the transcripts are replayed against.
enum Server {
    /// The in-process test API server: state can be inserted and faults set directly.
    Test(ApiServer),
    /// A genuine kube-apiserver: state is made through its API.
    Genuine { url: String },
}

struct Api {
    server: Server,
    http: reqwest::Client,
    /// Appended to each recorded namespace's name.
    suffix: String,
    /// The server's Kubernetes minor version: the recordings' for the test API server.
    minor: u32,
}

/// Where Kubernetes releases after the recordings' v1.28 answer the same requests differently:
/// (the first minor version that does, the recorded text, its text). Found by replaying against
/// a genuine kube-apiserver v1.37; the versions from k8s.io/apimachinery's history.
const NEWER_WORDING: [(u32, &str, &str); 3] = [
    // field.TooLong's message.
    (32, "Too long: must have at most", "Too long: may not be more than"),
    // ObjectMeta.creationTimestamp became `omitzero`: a bookmark's metadata no longer shows it.
    (34, r#","creationTimestamp":null"#, ""),
    // Label values are checked by validate/content, which counts bytes.
    (35, "must be no more than 63 characters", "must be no more than 63 bytes"),
];

impl Api {
    /// A server with the namespace the recordings were made in (renamed).
    async fn start() -> Api {
        // reqwest is built without a crypto provider; ring is the one the workspace uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = match std::env::var(KUBECONFIG_VAR) {
            Ok(path) => {
                let (url, http) = genuine_client(&path);
                let mut api = Api { server: Server::Genuine { url }, http, suffix: unique_suffix(), minor: RECORDED_MINOR };
                let version = api.get("/version").await.1;
                let minor = version["minor"].as_str().map(|m| m.trim_end_matches('+'));
                api.minor = minor.and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("/version: {version}"));
                api
            }
            Err(_) => {
                let http = reqwest::Client::builder().user_agent(USER_AGENT).build().expect("build client");
                Api { server: Server::Test(ApiServer::start().await), http, suffix: unique_suffix(), minor: RECORDED_MINOR }
            }
        };
        api.create_namespace("ref2").await;
        api
    }

    /// The test API server, or None on a genuine one (for what only the test server can do).
    fn test_server(&self) -> Option<&ApiServer> {
        match &self.server {
            Server::Test(server) => Some(server),
            Server::Genuine { .. } => None,
        }
    }

    fn url(&self) -> String {
        match &self.server {
            Server::Test(server) => server.url(),
            Server::Genuine { url } => url.clone(),
        }
    }

    /// This test's name for the recorded namespace `recorded`.
    fn ns(&self, recorded: &str) -> String {
        format!("{recorded}-{}", self.suffix)
    }

    /// Transcript `number`, its namespaces renamed to this test's, its answer worded as this
    /// server's version words it.
    fn transcript(&self, number: u32) -> Transcript {
        let mut t = read_transcript(number, |text| rename_namespaces(text, |ns| self.ns(ns)));
        for (since, recorded, newer) in NEWER_WORDING {
            if self.minor >= since {
                t.response = t.response.replace(recorded, newer);
            }
        }
        t
    }

    /// Creates the namespace the recordings call `recorded` (renamed).
    async fn create_namespace(&self, recorded: &str) {
        let ns = self.ns(recorded);
        match self.test_server() {
            Some(server) => drop(server.insert(namespace(&ns))),
            None => {
                let (code, body) = self.post("/api/v1/namespaces", &namespace(&ns)).await;
                assert_eq!(code, 201, "set-up: create namespace {ns}: {body}");
            }
        }
    }

    /// The server's current resourceVersion. On a genuine server other tests move it on too, so
    /// it is a lower bound of what later answers carry.
    async fn resource_version(&self) -> u64 {
        match self.test_server() {
            Some(server) => server.resource_version(),
            None => rv(&self.get("/api/v1/namespaces?limit=1").await.1),
        }
    }

    /// `rv` of a later answer is the current resourceVersion: exactly on the test server, at
    /// least `at_least` on a genuine one (where other tests write too).
    async fn assert_current_rv(&self, what: &str, got: u64, at_least: u64) {
        match self.test_server() {
            Some(server) => assert_eq!(got, server.resource_version(), "{what}: resourceVersion"),
            None => assert!(got >= at_least, "{what}: resourceVersion {got} is older than {at_least}"),
        }
    }

    /// The object at `path`, if it exists.
    async fn object(&self, path: &str) -> Option<Value> {
        let (code, body) = self.get(path).await;
        assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
        (code == 200).then_some(body)
    }

    /// The names of the Secrets in the recorded namespace `recorded` (renamed).
    async fn secret_names(&self, recorded: &str) -> Vec<String> {
        let (code, list) = self.get(&format!("/api/v1/namespaces/{}/secrets", self.ns(recorded))).await;
        assert_eq!(code, 200, "{list}");
        names(&list).into_iter().map(str::to_owned).collect()
    }

    /// Secrets of the recordings' namespace `ref2`.
    fn secrets(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.ns("ref2"))
    }

    async fn send(&self, method: &str, target: &str, headers: &[(String, String)], body: String) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{target}", self.url()));
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

    /// Opens the watch `target`.
    async fn watch(&self, target: &str) -> reqwest::Response {
        self.http.get(format!("{}{target}", self.url())).send().await.expect("open watch")
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

    /// Server-side apply of `body` at `path` by the set-up's own field manager.
    async fn apply(&self, path: &str, body: &Value) -> (u16, Value) {
        let target = format!("{path}?fieldManager=reference-set-up&force=true");
        self.send("PATCH", &target, &json_header("application/apply-patch+yaml"), body.to_string()).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, &[], String::new()).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send("DELETE", path, &[], String::new()).await
    }

    /// Creates a Secret through the API, as the recordings' set-up did.
    async fn create_secret(&self, recorded_ns: &str, body: Value) {
        let (code, created) = self.post(&format!("/api/v1/namespaces/{}/secrets", self.ns(recorded_ns)), &body).await;
        assert_eq!(code, 201, "set-up: {created}");
    }

    /// Polls `check` (every 100 ms, for at most 20 s) until it holds: on a genuine server the
    /// controllers' work (quota status, namespace deletion, CRD establishment) takes a moment.
    async fn wait_until<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("set-up: {what} did not happen within 20 s");
    }

    /// Makes the NavigatorToken API served. The test server serves it from the start (with the
    /// stand-in CRD's rule for 14); a genuine one once the project's CRD is established.
    async fn serve_navigator_tokens(&self) {
        if let Some(server) = self.test_server() {
            server.set_validator("navigatortokens", org_id_errors);
            return;
        }
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/navigatortoken.yaml");
        let crd: Value = serde_norway::from_str(&std::fs::read_to_string(path).expect("read the CRD")).expect("the CRD is YAML");
        let name = crd["metadata"]["name"].as_str().expect("CRD name").to_owned();
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
        let (code, body) = self.apply(&path, &crd).await;
        assert!(code == 200 || code == 201, "set-up: apply the CRD: {body}");
        self.wait_until("the CRD is established", || async {
            let crd = self.object(&path).await.unwrap_or_default();
            crd["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Established" && c["status"] == "True")
        })
        .await;
    }
}

/// A client for the genuine API server of kubeconfig `path` (its current context, with client
/// certificate authentication as testkit/control-plane/run.sh writes it) and that server's URL.
fn genuine_client(path: &str) -> (String, reqwest::Client) {
    let text = std::fs::read_to_string(path).expect("NAVIGATOR_TEST_KUBECONFIG is readable");
    let config: Value = serde_norway::from_str(&text).expect("the kubeconfig is YAML");
    let named = |list: &str, name: &Value| -> Value {
        let entry = config[list].as_array().into_iter().flatten().find(|entry| entry["name"] == *name);
        entry.cloned().unwrap_or_else(|| panic!("{path}: no {list} entry {name}"))
    };
    let context = named("contexts", &config["current-context"])["context"].clone();
    let cluster = named("clusters", &context["cluster"])["cluster"].clone();
    let user = named("users", &context["user"])["user"].clone();
    // Each PEM is a file, or base64 in the `-data` field beside it.
    let pem = |section: &Value, field: &str| -> Vec<u8> {
        if let Some(file) = section[field].as_str() {
            return std::fs::read(file).unwrap_or_else(|e| panic!("{path}: {field} {file}: {e}"));
        }
        let data = section[format!("{field}-data")].as_str().unwrap_or_else(|| panic!("{path}: the replay needs {field}"));
        base64::engine::general_purpose::STANDARD.decode(data).expect("kubeconfig data is base64")
    };
    let mut identity = pem(&user, "client-certificate");
    identity.extend(pem(&user, "client-key"));
    let http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem(&cluster, "certificate-authority")).expect("CA certificates"))
        .identity(reqwest::Identity::from_pem(&identity).expect("client certificate and key"))
        .build()
        .expect("build client");
    (cluster["server"].as_str().expect("a server URL").to_owned(), http)
}

/// A suffix for this test's namespaces, unique per test and per run.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), n) & 0xffff;
    format!("{}-{n}-{random:04x}", std::process::id())
}

/// `text` with each recorded namespace name, as a whole word (a run of `[a-z0-9-]`), renamed.
fn rename_namespaces(text: &str, rename: impl Fn(&str) -> String) -> String {
    let is_word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(is_word) {
        out.push_str(&rest[..start]);
        let word_len = rest[start..].find(|c: char| !is_word(c)).unwrap_or(rest.len() - start);
        let word = &rest[start..start + word_len];
        if RECORDED_NAMESPACES.contains(&word) {
            out.push_str(&rename(word))
        } else {
            out.push_str(word)
        }
        rest = &rest[start + word_len..];
    }
    out.push_str(rest);
    out
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
    let t = api.transcript(number);
    let (code, body) = api.replay(&t).await;
    let expected = t.response_json();
    match expected["kind"].as_str().unwrap_or_default() {
        "Status" => assert_status(&t, code, &body, &expected),
        kind if kind.ends_with("List") => {
            assert_eq!(code, t.status, "{}", t.file);
            assert_eq!((body["kind"].as_str(), names(&body)), (Some(kind), names(&expected)), "{}", t.file);
            assert_eq!(body["metadata"].get("continue"), None, "{}", t.file);
        }
        // Events: the real server owns `regarding` atomically; the test server owns its members.
        "Event" => assert_object(&t, code, &body, api.test_server().is_none()),
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
        api.create_namespace("ref").await;
        api.serve_navigator_tokens().await;
        if let Some(server) = api.test_server() {
            server.set_bookmark_interval(Duration::from_millis(200));
        }

        for number in 1..=4 {
            replay_and_compare(&api, number).await;
        }
        let watch_from = api.resource_version().await;
        let applied = replay_and_compare(&api, 6).await;
        let again = replay_and_compare(&api, 7).await;
        assert_eq!(rv(&again), rv(&applied), "07: an identical apply writes nothing");
        for number in 8..=9 {
            replay_and_compare(&api, number).await;
        }
        // 10: a replace with a stale resourceVersion. Its body names the recording's uid: sent as
        // recorded, storage refuses it for the uid, before it compares resourceVersions.
        let t = api.transcript(10);
        let (path, recorded_uid) = (t.target.clone(), t.request_json()["metadata"]["uid"].clone());
        let live_uid = api.object(&path).await.expect("tok exists")["metadata"]["uid"].clone();
        let (code, body) = api.replay(&t).await;
        let key = format!("/registry/secrets/{}/tok", api.ns("ref"));
        let uid_refusal = format!(
            "Operation cannot be fulfilled on secrets \"tok\": StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {}, UID in object meta: {}",
            recorded_uid.as_str().unwrap(),
            live_uid.as_str().unwrap()
        );
        assert_eq!((code, &body["reason"], &body["message"]), (409, &json!("Conflict"), &json!(uid_refusal)), "10: {body}");
        let mut request = t.request_json();
        request["metadata"]["uid"] = live_uid;
        let (code, body) = api.send(&t.method, &t.target, &t.headers, request.to_string()).await;
        assert_status(&t, code, &body, &t.response_json());
        replay_and_compare(&api, 11).await;

        // 05: a watch from before 06 replays 06, 09 and 11, then bookmarks (a genuine server
        // sends one shortly before the recorded timeoutSeconds).
        let t = api.transcript(5);
        let target = with_query(&t.target, "resourceVersion", &watch_from.to_string());
        let response = api.watch(&target).await;
        assert_eq!(response.status().as_u16(), t.status);
        let mut lines = Watch::new(response);
        let mut last_change = 0;
        for want in t.events() {
            let got = loop {
                let Some(got) = lines.next().await else {
                    // A genuine server may send no bookmark within the timeout (v1.37 often
                    // does not); the test server always does, as the recording shows.
                    assert!(want["type"] == "BOOKMARK" && api.test_server().is_none(), "05: the watch ended before {want}");
                    break None;
                };
                if got["type"] == "BOOKMARK" {
                    let mut shape = t.events().into_iter().find(|e| e["type"] == "BOOKMARK").expect("05 has a bookmark");
                    shape["object"]["metadata"]["resourceVersion"] = got["object"]["metadata"]["resourceVersion"].clone();
                    assert_eq!(got, shape, "05: bookmark");
                    api.assert_current_rv("05: bookmark", rv(&got["object"]), last_change).await;
                }
                // Elsewhere than recorded, a genuine server's bookmarks are fine too.
                if got["type"] == want["type"] || api.test_server().is_some() {
                    break Some(got);
                }
            };
            let Some(got) = got else { break };
            assert_eq!(got["type"], want["type"], "05: {got}");
            if got["type"] != "BOOKMARK" {
                for field in ["kind", "apiVersion", "data", "type"] {
                    assert_eq!(got["object"][field], want["object"][field], "05: {field} of {got}");
                }
                assert_eq!(got["object"]["metadata"]["name"], want["object"]["metadata"]["name"]);
                assert_eq!(managed_without_time(&got["object"]), managed_without_time(&want["object"]), "05: managedFields");
                last_change = rv(&got["object"]);
            }
        }

        // 12: a watch from a compacted resourceVersion gets an ERROR event with 410 Expired. Only
        // the test server can be made to forget on demand: a fresh genuine server (v1.27 and
        // v1.37 alike) still serves resourceVersion 1 from its watch cache, even after etcd is
        // compacted, so it answers with the events since.
        if let Some(server) = api.test_server() {
            server.compact();
            let t = api.transcript(12);
            let response = api.watch(&t.target).await;
            assert_eq!(response.status().as_u16(), t.status);
            let error = Watch::new(response).next().await.expect("12: an ERROR event");
            let recorded = t.response.replace("(741)", &format!("({})", server.resource_version()));
            let want: Value = serde_json::from_str(&recorded).unwrap();
            assert_eq!(error["type"], want["type"]);
            assert_status(&t, t.status, &error["object"], &want["object"]);
        }

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
        let t = api.transcript(19);
        let (code, body) = api.replay(&t).await;
        // The real server generates the name before validating: the answer names it.
        let generated = body["details"]["name"].as_str().unwrap_or_else(|| panic!("no generated name in {body}")).to_owned();
        let suffix = generated.strip_prefix("t1.").expect("the generated name starts with generateName");
        assert_eq!(suffix.len(), 5, "{generated}");
        let expected: Value = serde_json::from_str(&t.response.replace("t1.gt5cf", &generated)).unwrap();
        assert_status(&t, code, &body, &expected);
        let events = format!("/apis/events.k8s.io/v1/namespaces/{}/events", api.ns("ref2"));
        assert!(names(&api.get(&events).await.1).is_empty(), "nothing was stored");

        // A trailing '-' is how prefixes end.
        let mut event = t.request_json();
        event["metadata"]["generateName"] = json!("t1-");
        let (code, created) = api.post(&events, &event).await;
        assert_eq!(code, 201, "{created}");
        assert!(created["metadata"]["name"].as_str().unwrap().starts_with("t1-"));
    })
    .await;
}

#[tokio::test]
async fn ref_20_event_with_an_explicit_dotted_name() {
    bounded(async {
        let api = Api::start().await;
        let t = api.transcript(20);
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
        assert_replays_status(&api, &api.transcript(21)).await;
        assert!(api.secret_names("ref2").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn ref_22_23_label_keys_and_values_are_validated() {
    bounded(async {
        let api = Api::start().await;
        assert_replays_status(&api, &api.transcript(22)).await;
        assert_replays_status(&api, &api.transcript(23)).await;
        assert!(api.secret_names("ref2").await.is_empty(), "nothing was created");

        // One cause per bad label, all in one answer.
        let t = api.transcript(22);
        let two_bad = t.body.replace(r#"{"bad key!": "x"}"#, r#"{"bad key!": "x", "ok": "-bad value"}"#);
        let (code, body) = api.send(&t.method, &t.target, &t.headers, two_bad).await;
        assert_eq!(code, 422);
        assert_eq!(body["details"]["causes"].as_array().unwrap().len(), 2, "{body}");
        // In either order: the real server walks the labels as a Go map, in random order.
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("Secret \"lbl\" is invalid: [metadata.labels: Invalid value: \""), "{body}");
        for label in ["\"bad key!\"", "\"-bad value\""] {
            assert!(message.contains(&format!("metadata.labels: Invalid value: {label}")), "{label} in {body}");
        }

        // Updates are checked too.
        api.create_secret("ref2", secret("lbl", json!({}))).await;
        let (code, _) = api.merge(&format!("{}/lbl", api.secrets()), &json!({"metadata": {"labels": {"bad key!": "x"}}})).await;
        assert_eq!(code, 422);
    })
    .await;
}

#[tokio::test]
async fn ref_24_annotations_are_at_most_256k() {
    bounded(async {
        let api = Api::start().await;
        let t = api.transcript(24);
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
        assert_replays_status(&api, &api.transcript(25)).await;
        let frozen = format!("{}/frozen", api.secrets());
        assert_eq!(api.object(&frozen).await.unwrap()["data"]["token"], TOKEN);

        // Metadata may still change.
        let t = api.transcript(26);
        let (code, body) = api.replay(&t).await;
        assert_eq!(code, t.status, "{body}");
        let expected = t.response_json();
        for field in ["kind", "apiVersion", "immutable", "data", "type"] {
            assert_eq!(body[field], expected[field], "{field}");
        }
        assert_eq!(body["metadata"]["labels"], expected["metadata"]["labels"]);
        assert_eq!(managed_without_time(&body), managed_without_time(&expected));

        // And `immutable` cannot be taken back.
        let (code, body) = api.merge(&frozen, &json!({"immutable": false})).await;
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
        assert_replays_status(&api, &api.transcript(27)).await;
        assert_eq!(api.object(&format!("{}/typed", api.secrets())).await.unwrap()["type"], "Opaque");
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

async fn assert_page(api: &Api, t: &Transcript, code: u16, page: &Value, written: u64) {
    let expected = t.response_json();
    assert_eq!(code, t.status, "{}: {page}", t.file);
    assert_eq!(page["kind"], expected["kind"], "{}", t.file);
    assert_eq!(names(page), names(&expected), "{}", t.file);
    let (meta, expected_meta) = (&page["metadata"], &expected["metadata"]);
    assert_eq!(meta["continue"].is_string(), expected_meta["continue"].is_string(), "{}: continue", t.file);
    assert_eq!(meta["remainingItemCount"], expected_meta["remainingItemCount"], "{}: remainingItemCount", t.file);
    api.assert_current_rv(&t.file, rv(page), written).await;
}

#[tokio::test]
async fn ref_28_to_31_list_paging() {
    bounded(async {
        let api = Api::start().await;
        paging_state(&api).await;
        let written = api.resource_version().await;

        let first = api.transcript(28);
        let (code, page) = api.replay(&first).await;
        assert_page(&api, &first, code, &page, written).await;

        // Continue tokens are the server's own: the second page follows ours.
        let second = api.transcript(29);
        let token = page["metadata"]["continue"].as_str().unwrap();
        let (code, page) = api.replay_at(&second, &with_query(&second.target, "continue", token)).await;
        assert_page(&api, &second, code, &page, written).await;

        let cached = api.transcript(30);
        let (code, page) = api.replay(&cached).await;
        assert_page(&api, &cached, code, &page, written).await;

        let not_older = api.transcript(31);
        let target = with_query(&not_older.target, "resourceVersion", &written.to_string());
        let (code, page) = api.replay_at(&not_older, &target).await;
        assert_page(&api, &not_older, code, &page, written).await;

        // With a selector the remaining count is unknown, so it is left out.
        let (_, selected) = api.get(&format!("{}?limit=1&labelSelector=a!%3Db", api.secrets())).await;
        assert!(selected["metadata"]["continue"].is_string());
        assert!(selected["metadata"].get("remainingItemCount").is_none(), "{selected}");
    })
    .await;
}

#[tokio::test]
async fn ref_32_watch_with_label_selector_sees_objects_leave_and_enter() {
    bounded(async {
        let api = Api::start().await;
        if let Some(server) = api.test_server() {
            server.set_bookmark_interval(Duration::from_millis(200));
        }
        paging_state(&api).await;
        let t = api.transcript(32);
        let start = api.resource_version().await;
        let target = with_query(&t.target, "resourceVersion", &start.to_string());
        let response = api.watch(&target).await;
        assert_eq!(response.status().as_u16(), t.status);

        // What happened during the recording: "managed" created with the label, then relabelled;
        // page-0 labelled.
        let label = json!({"app.kubernetes.io/managed-by": "navigator-token-operator"});
        api.create_secret("ref2", secret("managed", json!({"metadata": {"name": "managed", "labels": label}}))).await;
        let (_, relabelled) = api
            .merge(&format!("{}/managed", api.secrets()), &json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}))
            .await;
        api.merge(&format!("{}/page-0", api.secrets()), &json!({"metadata": {"labels": label}})).await;

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
        shape["object"]["metadata"]["resourceVersion"] = bookmark["object"]["metadata"]["resourceVersion"].clone();
        assert_eq!(bookmark, shape);
        api.assert_current_rv("bookmark", rv(&bookmark["object"]), rv(&changes[2]["object"])).await;
    })
    .await;
}

// --- authorization and admission --------------------------------------------------------------

#[tokio::test]
async fn ref_33_rbac_denial() {
    bounded(async {
        let api = Api::start().await;
        let t = api.transcript(33);
        let user = t.headers.iter().find(|(name, _)| name == "Impersonate-User").expect("33 impersonates").1.clone();
        let as_user = [("Impersonate-User".to_owned(), user.clone())];
        let ns = api.ns("ref2");
        let get_x = format!("{}/x", api.secrets());
        let status = format!("/apis/navigator.dev/v1alpha1/namespaces/{ns}/navigatortokens/t/status");
        // Nothing allowed: a genuine server's RBAC gives the impersonated user nothing.
        match api.test_server() {
            Some(server) => ["list", "get"].into_iter().for_each(|verb| server.forbid(verb, "secrets")),
            None => api.serve_navigator_tokens().await,
        }
        if let Some(server) = api.test_server() {
            server.forbid("*", "navigatortokens/status");
        }
        assert_replays_status(&api, &t).await;

        // Each verb is denied by its own name; a status subresource by its own.
        let (code, body) = api.send("GET", &get_x, &as_user, String::new()).await;
        assert_eq!(code, 403, "{body}");
        let denial = format!("User \"{user}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\"");
        assert_eq!(body["message"], format!("secrets \"x\" is forbidden: {denial}"));
        assert_eq!(body["details"], json!({"name": "x", "kind": "secrets"}));
        let (code, body) = api.send("GET", &status, &as_user, String::new()).await;
        assert_eq!(code, 403);
        assert!(
            body["message"].as_str().unwrap().contains("cannot get resource \"navigatortokens/status\" in API group \"navigator.dev\"")
        );
        assert_eq!(body["details"], json!({"name": "t", "group": "navigator.dev", "kind": "navigatortokens"}));
        if let Some(server) = api.test_server() {
            // Without impersonation the test server names the user it is configured with.
            server.set_user(&user);
            let (code, body) = api.get(&get_x).await;
            assert_eq!((code, &body["message"]), (403, &json!(format!("secrets \"x\" is forbidden: {denial}"))));
        }

        // Allowed to list, the recorded request passes, and get is still denied.
        match api.test_server() {
            Some(server) => server.allow("list", "secrets"),
            None => api.grant(&ns, &user, &["list"], "secrets").await,
        }
        api.wait_until("list is allowed", || async { api.replay(&t).await.0 == 200 }).await;
        assert_eq!(api.send("GET", &get_x, &as_user, String::new()).await.0, 403);
        match api.test_server() {
            Some(server) => server.allow_all(),
            None => api.grant(&ns, &user, &["list", "get"], "secrets").await,
        }
        api.wait_until("get is allowed", || async { api.send("GET", &get_x, &as_user, String::new()).await.0 == 404 }).await;
    })
    .await;
}

#[tokio::test]
async fn ref_34_status_apply_to_a_missing_object() {
    bounded(async {
        let api = Api::start().await;
        api.serve_navigator_tokens().await;
        assert_replays_status(&api, &api.transcript(34)).await;
        let missing = format!("/apis/navigator.dev/v1alpha1/namespaces/{}/navigatortokens/missing", api.ns("ref2"));
        assert!(api.object(&missing).await.is_none(), "nothing was created");
    })
    .await;
}

#[tokio::test]
async fn ref_35_writes_into_a_missing_namespace() {
    bounded(async {
        let api = Api::start().await;
        let t = api.transcript(35);
        let ns = api.ns("no-such-ns");
        assert_replays_status(&api, &t).await;
        // A plain create gets the same answer.
        let (code, body) = api.post(&format!("/api/v1/namespaces/{ns}/secrets"), &secret("tok", json!({}))).await;
        assert_status(&t, code, &body, &t.response_json());
        // Reads are not admission's business: an empty list.
        assert!(api.secret_names("no-such-ns").await.is_empty());
        // An object inserted directly into a missing namespace (only the test server can) cannot
        // be updated through the API.
        if let Some(server) = api.test_server() {
            server.insert(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stray", "namespace": ns}}));
            let (code, _) = api.merge(&format!("/api/v1/namespaces/{ns}/secrets/stray"), &json!({"data": {"a": "YQ=="}})).await;
            assert_eq!(code, 404);
        }

        api.create_namespace("no-such-ns").await;
        assert_eq!(api.replay(&t).await.0, 201);
    })
    .await;
}

#[tokio::test]
async fn ref_36_resource_quota_counts_secrets() {
    bounded(async {
        let api = Api::start().await;
        api.create_namespace("ref2-quota").await;
        api.set_quota("ref2-quota", json!({"count/secrets": "1"})).await;
        api.create_secret("ref2-quota", secret("existing", json!({}))).await;
        let t = api.transcript(36);
        assert_replays_status(&api, &t).await;

        // Updates are not counted.
        let existing = format!("/api/v1/namespaces/{}/secrets/existing", api.ns("ref2-quota"));
        let (code, _) = api.merge(&existing, &json!({"data": {"token": "bmV3"}})).await;
        assert_eq!(code, 200);
        // The legacy name counts too, and every exceeded limit is listed.
        api.set_quota("ref2-quota", json!({"count/secrets": "1", "secrets": "1"})).await;
        let (code, body) = api.replay(&t).await;
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "secrets \"tok\" is forbidden: exceeded quota: secrets, requested: count/secrets=1,secrets=1, used: count/secrets=1,secrets=1, limited: count/secrets=1,secrets=1"
        );

        api.set_quota("ref2-quota", json!({"count/secrets": "2"})).await;
        assert_eq!(api.replay(&t).await.0, 201);
    })
    .await;
}

#[tokio::test]
async fn ref_37_38_no_creates_in_a_terminating_namespace() {
    bounded(async {
        let api = Api::start().await;
        let ns = api.ns("ref2-terminating");
        api.create_namespace("ref2-terminating").await;
        // On a genuine server the namespace controller deletes what the namespace holds; a
        // finalizer keeps "old" (and so the namespace) until the test lets go.
        let hold = json!({"metadata": {"name": "old", "finalizers": ["navigator.dev/reference-test"]}});
        api.create_secret("ref2-terminating", secret("old", hold)).await;
        api.terminate_namespace("ref2-terminating").await;

        assert_replays_status(&api, &api.transcript(37)).await;
        assert_replays_status(&api, &api.transcript(38)).await;
        let (code, _) = api.post(&format!("/api/v1/namespaces/{ns}/secrets"), &secret("tok", json!({}))).await;
        assert_eq!(code, 403);

        // Objects already there can still be updated (and deleted) while it terminates.
        let old = format!("/api/v1/namespaces/{ns}/secrets/old");
        let (code, body) = api.merge(&old, &json!({"metadata": {"labels": {"a": "b"}}})).await;
        assert_eq!(code, 200, "{body}");
        let namespace = api.object(&format!("/api/v1/namespaces/{ns}")).await.expect("the namespace stays");
        assert!(namespace["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(namespace["status"]["phase"], "Terminating");
        // Let the namespace go.
        let (code, body) = api.merge(&old, &json!({"metadata": {"finalizers": null}})).await;
        assert_eq!(code, 200, "{body}");
    })
    .await;
}

// --- beyond the transcripts: the same checks against both servers in CI ---------------------

/// Found when the plugin's tests first ran against a genuine server: re-posting an object read
/// from the server names its resourceVersion, which storage refuses with a 500 and no reason,
/// whether or not the name exists; and a replace naming another uid is refused for the uid.
#[tokio::test]
async fn a_create_naming_a_resource_version_is_an_internal_error() {
    bounded(async {
        let api = Api::start().await;
        let (code, created) = api.post(&api.secrets(), &secret("again", json!({}))).await;
        assert_eq!(code, 201, "{created}");
        let refusal = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "resourceVersion should not be set on objects to be created", "code": 500});
        assert_eq!(api.post(&api.secrets(), &created).await, (500, refusal.clone()), "the name exists");
        let mut renamed = created.clone();
        renamed["metadata"]["name"] = json!("again-2");
        assert_eq!(api.post(&api.secrets(), &renamed).await, (500, refusal), "a new name");
        assert_eq!(api.secret_names("ref2").await, ["again"]);
    })
    .await;
}

// --- set-up through either server -------------------------------------------------------------

impl Api {
    /// Sets the ResourceQuota "secrets" of the recorded namespace `recorded` to `hard`. A
    /// genuine server admits against it once the quota controller has filled in its status.
    async fn set_quota(&self, recorded: &str, hard: Value) {
        let ns = self.ns(recorded);
        let quota = json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "secrets", "namespace": ns},
            "spec": {"hard": hard}
        });
        if let Some(server) = self.test_server() {
            server.insert(quota);
            return;
        }
        let path = format!("/api/v1/namespaces/{ns}/resourcequotas/secrets");
        let (code, body) = self.apply(&path, &quota).await;
        assert!(code == 200 || code == 201, "set-up: quota: {body}");
        self.wait_until("the quota's status follows its spec", || async {
            let quota = self.object(&path).await.unwrap_or_default();
            quota["status"]["hard"] == quota["spec"]["hard"]
        })
        .await;
    }

    /// Deletes the recorded namespace `recorded`, which something keeps from going away, and
    /// waits until creates in it are refused.
    async fn terminate_namespace(&self, recorded: &str) {
        let ns = self.ns(recorded);
        if let Some(server) = self.test_server() {
            server.terminate_namespace(&ns);
            return;
        }
        let (code, body) = self.delete(&format!("/api/v1/namespaces/{ns}")).await;
        assert_eq!(code, 200, "set-up: delete namespace: {body}");
        // Admission sees the namespace through its own cache: a probe tells when it does.
        let probe = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}});
        self.wait_until("creates are refused in the terminating namespace", || async {
            let (code, _) = self.post(&format!("/api/v1/namespaces/{ns}/configmaps"), &probe).await;
            if code == 201 {
                self.delete(&format!("/api/v1/namespaces/{ns}/configmaps/probe")).await;
            }
            code == 403
        })
        .await;
    }

    /// Lets `user` do `verbs` on core `resource` in namespace `ns`: a Role and its RoleBinding,
    /// on a genuine server.
    async fn grant(&self, ns: &str, user: &str, verbs: &[&str], resource: &str) {
        let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}");
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "reference-test", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": verbs}]
        });
        let (code, body) = self.apply(&format!("{rbac}/roles/reference-test"), &role).await;
        assert!(code == 200 || code == 201, "set-up: role: {body}");
        let subject = match user.strip_prefix("system:serviceaccount:").and_then(|sa| sa.split_once(':')) {
            Some((sa_ns, sa)) => json!({"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}),
            None => json!({"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}),
        };
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reference-test", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reference-test"},
            "subjects": [subject]
        });
        let (code, body) = self.apply(&format!("{rbac}/rolebindings/reference-test"), &binding).await;
        assert!(code == 200 || code == 201, "set-up: role binding: {body}");
    }
}
