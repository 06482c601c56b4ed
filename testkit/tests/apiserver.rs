//! Tests of the test Kubernetes API server through a plain HTTP client (reqwest).
//!
//! The `ref_*` tests replay the requests recorded from a real kube-apiserver v1.28 (transcripts
//! in `fixtures/k8s-reference`) and compare status codes and the relevant parts of the bodies
//! (uids, timestamps and resourceVersions naturally differ). Every test binds 127.0.0.1 only and
//! runs under a time bound.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::Watch;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, Fault, FaultKind, FieldError};

/// What the reference recordings were made with; the server derives the manager from it.
const USER_AGENT: &str = "python-requests/2.31.0";
const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const SECRETS: &str = "/api/v1/namespaces/ref/secrets";
const TOKENS: &str = "/apis/navigator.dev/v1alpha1/namespaces/ref/navigatortokens";
const ORG: &str = "6b8f1c2e-1111-4a5b-9c3d-000000000001";

/// Fails the test instead of letting it hang.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("test exceeded its time bound")
}

/// A started server and a client for it.
struct Api {
    server: ApiServer,
    http: reqwest::Client,
}

/// A response: status code, JSON body (Null when empty or not JSON), headers.
struct Reply {
    code: u16,
    body: Value,
    headers: HeaderMap,
}

impl Api {
    async fn start() -> Api {
        // reqwest is built without a crypto provider; ring is the one the workspace uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().user_agent(USER_AGENT).build().expect("build client");
        let server = ApiServer::start().await;
        // Writes need their namespace, as on a real server.
        server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ref"}}));
        Api { server, http }
    }

    async fn call(&self, method: &str, path: &str, content_type: Option<&str>, body: Option<String>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.server.url()));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("send request");
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { code, body, headers }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, Some("application/json"), Some(body.to_string())).await
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        self.call("PUT", path, Some("application/json"), Some(body.to_string())).await
    }

    async fn merge(&self, path: &str, body: &Value) -> Reply {
        self.call("PATCH", path, Some(MERGE), Some(body.to_string())).await
    }

    async fn apply(&self, path: &str, yaml: &str) -> Reply {
        self.call("PATCH", path, Some(APPLY), Some(yaml.to_owned())).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None, None).await
    }

    async fn watch(&self, path: &str) -> Watch {
        let response = self.http.get(format!("{}{path}", self.server.url())).send().await.expect("open watch");
        assert_eq!(response.status().as_u16(), 200, "watch {path}");
        Watch::new(response)
    }
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {obj}"))
}

/// managedFields with the timestamps taken out, for comparison with the reference.
fn managed_without_time(obj: &Value) -> Value {
    let mut entries = obj["metadata"]["managedFields"].clone();
    if let Some(entries) = entries.as_array_mut() {
        for entry in entries {
            let time = entry["time"].as_str().expect("every entry has a time");
            assert_rfc3339(time);
            entry.as_object_mut().expect("entry").remove("time");
        }
    }
    entries
}

fn assert_rfc3339(ts: &str) {
    let bytes = ts.as_bytes();
    assert_eq!(bytes.len(), 20, "timestamp {ts}");
    assert!(ts.starts_with("20") && ts.ends_with('Z'), "timestamp {ts}");
    assert_eq!((bytes[4], bytes[7], bytes[10], bytes[13], bytes[16]), (b'-', b'-', b'T', b':', b':'), "timestamp {ts}");
}

fn assert_uid(uid: &Value) {
    let uid = uid.as_str().expect("uid is a string");
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "uid {uid}");
}

// --- reference requests -----------------------------------------------------------------------

const REF06_APPLY: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: tok
  labels:
    app.kubernetes.io/managed-by: navigator-token-operator
  annotations:
    navigator.dev/expires-at: "2026-11-22T20:00:00Z"
type: Opaque
data:
  token: dG9rZW4=
"#;

const REF08_APPLY: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: tok
data:
  token: b3RoZXI=
"#;

const REF15_APPLY: &str = r#"apiVersion: navigator.dev/v1alpha1
kind: NavigatorToken
metadata:
  name: t1
status:
  observedGeneration: 1
  conditions:
  - type: Ready
    status: "True"
    reason: Issued
    message: token issued
    lastTransitionTime: "2026-11-22T19:00:00Z"
    observedGeneration: 1
"#;

const OPERATOR_APPLY: &str = "?fieldManager=navigator-token-operator&force=true";

fn ref06_managed() -> Value {
    json!([{
        "manager": "navigator-token-operator",
        "operation": "Apply",
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:data": {"f:token": {}},
            "f:metadata": {
                "f:annotations": {"f:navigator.dev/expires-at": {}},
                "f:labels": {"f:app.kubernetes.io/managed-by": {}}
            },
            "f:type": {}
        }
    }])
}

fn ref09_managed() -> Value {
    json!([
        {
            "manager": "navigator-token-operator",
            "operation": "Apply",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {"f:navigator.dev/expires-at": {}},
                    "f:labels": {"f:app.kubernetes.io/managed-by": {}}
                },
                "f:type": {}
            }
        },
        {
            "manager": "python-requests",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:token": {}}}
        }
    ])
}

fn ref13_token() -> Value {
    json!({
        "apiVersion": "navigator.dev/v1alpha1",
        "kind": "NavigatorToken",
        "metadata": {"name": "t1"},
        "spec": {"orgId": ORG, "credentialsSecretRef": {"name": "creds"}}
    })
}

fn ref13_python_entry(validity: bool) -> Value {
    let mut spec = json!({
        ".": {},
        "f:credentialsSecretRef": {".": {}, "f:name": {}},
        "f:orgId": {}
    });
    if validity {
        spec["f:validity"] = json!({});
    }
    json!({
        "apiVersion": "navigator.dev/v1alpha1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": spec},
        "manager": "python-requests",
        "operation": "Update"
    })
}

fn ref15_status_entry() -> Value {
    json!({
        "apiVersion": "navigator.dev/v1alpha1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:conditions": {}, "f:observedGeneration": {}}},
        "manager": "navigator-token-operator",
        "operation": "Apply",
        "subresource": "status"
    })
}

// --- reference replays ------------------------------------------------------------------------

#[tokio::test]
async fn ref_01_to_04_create_conflict_get_list() {
    bounded(async {
        let api = Api::start().await;
        // 01: create; stringData folded into data.
        let created = api
            .post(
                SECRETS,
                &json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "creds"},
                    "type": "Opaque",
                    "stringData": {"client_id": "id", "client_secret": "x"}
                }),
            )
            .await;
        assert_eq!(created.code, 201);
        let secret = &created.body;
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(secret["apiVersion"], "v1");
        assert_eq!(secret["metadata"]["name"], "creds");
        assert_eq!(secret["metadata"]["namespace"], "ref");
        assert_eq!(secret["data"], json!({"client_id": "aWQ=", "client_secret": "eA=="}));
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
        assert!(secret["metadata"].get("generation").is_none(), "Secrets have no generation");
        assert_uid(&secret["metadata"]["uid"]);
        assert_rfc3339(secret["metadata"]["creationTimestamp"].as_str().unwrap());
        assert_eq!(
            managed_without_time(secret),
            json!([{
                "manager": "python-requests",
                "operation": "Update",
                "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:data": {".": {}, "f:client_id": {}, "f:client_secret": {}},
                    "f:type": {}
                }
            }])
        );

        // 02: the same name again.
        let again = api.post(SECRETS, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}})).await;
        assert_eq!(again.code, 409);
        assert_eq!(
            again.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "secrets \"creds\" already exists",
                "reason": "AlreadyExists",
                "details": {"name": "creds", "kind": "secrets"},
                "code": 409
            })
        );

        // 03: get of a missing object.
        let missing = api.get(&format!("{SECRETS}/missing")).await;
        assert_eq!(missing.code, 404);
        assert_eq!(
            missing.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "secrets \"missing\" not found",
                "reason": "NotFound",
                "details": {"name": "missing", "kind": "secrets"},
                "code": 404
            })
        );

        // 04: list; its resourceVersion is the watch start point.
        let list = api.get(&format!("{SECRETS}?limit=500")).await;
        assert_eq!(list.code, 200);
        assert_eq!(list.body["kind"], "SecretList");
        assert_eq!(list.body["apiVersion"], "v1");
        assert_eq!(list.body["metadata"]["resourceVersion"], secret["metadata"]["resourceVersion"]);
        assert!(list.body["metadata"].get("continue").is_none());
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        assert_eq!(list.body["items"][0]["data"], secret["data"]);
        assert_eq!(list.body["items"][0]["metadata"]["uid"], secret["metadata"]["uid"]);
    })
    .await;
}

#[tokio::test]
async fn ref_05_watch_replays_changes_and_sends_bookmarks() {
    bounded(async {
        let api = Api::start().await;
        api.server.set_bookmark_interval(Duration::from_millis(200));
        let list = api.get(SECRETS).await;
        let start = list.body["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

        // The changes happen before the watch is opened: it must replay them from history.
        let created = api.apply(&format!("{SECRETS}/tok{OPERATOR_APPLY}"), REF06_APPLY).await;
        assert_eq!(created.code, 201);
        let patched = api.merge(&format!("{SECRETS}/tok"), &json!({"data": {"token": "bmV3"}})).await;
        assert_eq!(patched.code, 200);
        let deleted = api.delete(&format!("{SECRETS}/tok")).await;
        assert_eq!(deleted.code, 200);

        let mut watch = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=8")).await;
        let added = watch.next().await.expect("ADDED");
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["kind"], "Secret");
        assert_eq!(added["object"]["apiVersion"], "v1");
        assert_eq!(added["object"]["data"]["token"], "dG9rZW4=");
        assert_eq!(rv(&added["object"]), rv(&created.body));

        let modified = watch.next().await.expect("MODIFIED");
        assert_eq!(modified["type"], "MODIFIED");
        assert_eq!(modified["object"]["data"]["token"], "bmV3");
        assert_eq!(rv(&modified["object"]), rv(&patched.body));
        assert_eq!(managed_without_time(&modified["object"]), ref09_managed());

        let gone = watch.next().await.expect("DELETED");
        assert_eq!(gone["type"], "DELETED");
        // The deletion itself gets a new resourceVersion, as on the real server.
        assert!(rv(&gone["object"]) > rv(&patched.body));
        assert_eq!(rv(&gone["object"]), api.server.resource_version());
        assert_eq!(gone["object"]["data"]["token"], "bmV3");

        let bookmark = watch.next().await.expect("BOOKMARK");
        assert_eq!(
            bookmark,
            json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": api.server.resource_version().to_string(), "creationTimestamp": null}
                }
            })
        );

        // Live events follow on the same stream.
        api.post(SECRETS, &json!({"metadata": {"name": "later"}})).await;
        let live = watch.next_change().await;
        assert_eq!(live["type"], "ADDED");
        assert_eq!(live["object"]["metadata"]["name"], "later");
    })
    .await;
}

#[tokio::test]
async fn ref_06_to_11_server_side_apply_sequence() {
    bounded(async {
        let api = Api::start().await;
        let tok = format!("{SECRETS}/tok");
        // 06: apply creates.
        let created = api.apply(&format!("{tok}{OPERATOR_APPLY}"), REF06_APPLY).await;
        assert_eq!(created.code, 201);
        let body = &created.body;
        assert_eq!(body["metadata"]["labels"], json!({"app.kubernetes.io/managed-by": "navigator-token-operator"}));
        assert_eq!(body["metadata"]["annotations"], json!({"navigator.dev/expires-at": "2026-11-22T20:00:00Z"}));
        assert_eq!(body["data"], json!({"token": "dG9rZW4="}));
        assert_eq!(body["type"], "Opaque");
        assert_eq!(body["metadata"]["namespace"], "ref");
        assert_eq!(managed_without_time(body), ref06_managed());

        // 07: the same apply again changes nothing, not even managedFields times.
        let mut watch = api
            .watch(&format!("{SECRETS}?watch=true&resourceVersion={}", rv(body)))
            .await;
        let same = api.apply(&format!("{tok}{OPERATOR_APPLY}"), REF06_APPLY).await;
        assert_eq!(same.code, 200);
        assert_eq!(same.body, created.body);
        assert_eq!(api.server.resource_version(), rv(body));

        // 08: another manager, no force: conflict.
        let conflict = api.apply(&format!("{tok}?fieldManager=someone-else"), REF08_APPLY).await;
        assert_eq!(conflict.code, 409);
        assert_eq!(
            conflict.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Apply failed with 1 conflict: conflict with \"navigator-token-operator\": .data.token",
                "reason": "Conflict",
                "details": {"causes": [{
                    "reason": "FieldManagerConflict",
                    "message": "conflict with \"navigator-token-operator\"",
                    "field": ".data.token"
                }]},
                "code": 409
            })
        );
        assert_eq!(api.server.resource_version(), rv(body), "a conflict writes nothing");

        // 09: a merge patch takes over the field it changes.
        let patched = api.merge(&tok, &json!({"data": {"token": "bmV3"}})).await;
        assert_eq!(patched.code, 200);
        assert_eq!(patched.body["data"]["token"], "bmV3");
        assert_eq!(rv(&patched.body), rv(body) + 1);
        assert_eq!(managed_without_time(&patched.body), ref09_managed());
        // The no-op apply and the conflict left no trace on the watch: the next event is 09.
        let event = watch.next_change().await;
        assert_eq!(event["type"], "MODIFIED");
        assert_eq!(rv(&event["object"]), rv(&patched.body));

        // 10: PUT with a stale resourceVersion.
        let mut stale = patched.body.clone();
        stale["metadata"]["resourceVersion"] = json!("1");
        let put = api.put(&tok, &stale).await;
        assert_eq!(put.code, 409);
        assert_eq!(
            put.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Operation cannot be fulfilled on secrets \"tok\": the object has been modified; please apply your changes to the latest version and try again",
                "reason": "Conflict",
                "details": {"name": "tok", "kind": "secrets"},
                "code": 409
            })
        );

        // 11: delete.
        let deleted = api.delete(&tok).await;
        assert_eq!(deleted.code, 200);
        assert_eq!(
            deleted.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": "tok", "kind": "secrets", "uid": body["metadata"]["uid"]}
            })
        );
        assert_eq!(api.get(&tok).await.code, 404);
        assert_eq!(api.delete(&tok).await.code, 404);
    })
    .await;
}

#[tokio::test]
async fn ref_12_watch_from_compacted_version_gets_410() {
    bounded(async {
        let api = Api::start().await;
        for name in ["a", "b"] {
            api.post(SECRETS, &json!({"metadata": {"name": name}})).await;
        }
        let current = api.server.resource_version();
        api.server.compact();

        let mut expired = api.watch(&format!("{SECRETS}?watch=true&resourceVersion=1&timeoutSeconds=3")).await;
        let error = expired.next().await.expect("an ERROR event");
        assert_eq!(
            error,
            json!({
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("too old resource version: 1 ({current})"),
                    "reason": "Expired",
                    "code": 410
                }
            })
        );
        assert!(expired.next().await.is_none(), "the stream ends after the error");

        // From the compaction point on, watching works again.
        let mut fresh = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={current}")).await;
        api.post(SECRETS, &json!({"metadata": {"name": "c"}})).await;
        let added = fresh.next_change().await;
        assert_eq!(added["type"], "ADDED");
        assert_eq!(added["object"]["metadata"]["name"], "c");

        // expire_watches: even a caught-up watch must re-list.
        let caught_up = api.server.resource_version();
        api.server.expire_watches();
        assert!(fresh.next().await.is_none(), "open watches are closed");
        let mut rewatch = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={caught_up}")).await;
        let error = rewatch.next().await.expect("an ERROR event");
        assert_eq!(error["type"], "ERROR");
        assert_eq!(error["object"]["code"], 410);
        let list = api.get(SECRETS).await;
        assert_eq!(names(&list.body), ["a", "b", "c"]);
        let relisted = list.body["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        let mut resumed = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={relisted}")).await;
        api.post(SECRETS, &json!({"metadata": {"name": "d"}})).await;
        assert_eq!(resumed.next_change().await["object"]["metadata"]["name"], "d");
    })
    .await;
}

#[tokio::test]
async fn ref_13_15_16_18_custom_resource_lifecycle() {
    bounded(async {
        let api = Api::start().await;
        let t1 = format!("{TOKENS}/t1");
        // 13: generation starts at 1.
        let created = api.post(TOKENS, &ref13_token()).await;
        assert_eq!(created.code, 201);
        assert_eq!(created.body["apiVersion"], "navigator.dev/v1alpha1");
        assert_eq!(created.body["kind"], "NavigatorToken");
        assert_eq!(created.body["metadata"]["generation"], 1);
        assert_eq!(created.body["spec"], ref13_token()["spec"]);
        assert_eq!(managed_without_time(&created.body), json!([ref13_python_entry(false)]));

        // 15: apply to the status subresource: status only, generation unchanged.
        let status = api.apply(&format!("{t1}/status{OPERATOR_APPLY}"), REF15_APPLY).await;
        assert_eq!(status.code, 200);
        assert_eq!(status.body["metadata"]["generation"], 1);
        assert_eq!(rv(&status.body), rv(&created.body) + 1);
        assert_eq!(status.body["status"]["observedGeneration"], 1);
        assert_eq!(status.body["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(status.body["status"]["conditions"][0]["status"], "True");
        assert_eq!(status.body["spec"], created.body["spec"]);
        assert_eq!(managed_without_time(&status.body), json!([ref15_status_entry(), ref13_python_entry(false)]));

        // 16: a spec change bumps generation.
        let patched = api.merge(&t1, &json!({"spec": {"validity": "30m"}})).await;
        assert_eq!(patched.code, 200);
        assert_eq!(patched.body["metadata"]["generation"], 2);
        assert_eq!(patched.body["spec"]["validity"], "30m");
        assert_eq!(patched.body["status"], status.body["status"]);
        assert_eq!(managed_without_time(&patched.body), json!([ref15_status_entry(), ref13_python_entry(true)]));

        // 18: delete with DeleteOptions.
        let deleted = api
            .call(
                "DELETE",
                &t1,
                Some("application/json"),
                Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}).to_string()),
            )
            .await;
        assert_eq!(deleted.code, 200);
        assert_eq!(
            deleted.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": "t1",
                    "group": "navigator.dev",
                    "kind": "navigatortokens",
                    "uid": created.body["metadata"]["uid"]
                }
            })
        );
        let missing = api.get(&t1).await;
        assert_eq!(missing.code, 404);
        assert_eq!(missing.body["message"], "navigatortokens.navigator.dev \"t1\" not found");
        assert_eq!(missing.body["details"], json!({"name": "t1", "group": "navigator.dev", "kind": "navigatortokens"}));
    })
    .await;
}

/// The reference CRD's only schema rule, written out by hand.
fn org_id_errors(obj: &Value) -> Vec<FieldError> {
    let org = obj["spec"]["orgId"].as_str().unwrap_or_default();
    let groups: Vec<&str> = org.split('-').collect();
    let shape_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]) && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if shape_ok {
        return Vec::new();
    }
    vec![FieldError {
        field: "spec.orgId".into(),
        message: format!(
            "Invalid value: \"{org}\": spec.orgId in body should match '^[0-9a-fA-F]{{8}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{4}}-[0-9a-fA-F]{{12}}$'"
        ),
    }]
}

#[tokio::test]
async fn ref_14_validator_rejects_invalid_custom_resource() {
    bounded(async {
        let api = Api::start().await;
        api.server.set_validator("navigatortokens", org_id_errors);
        let mut bad = ref13_token();
        bad["metadata"]["name"] = json!("t2");
        bad["spec"]["orgId"] = json!("not-a-guid");
        let rejected = api.post(TOKENS, &bad).await;
        assert_eq!(rejected.code, 422);
        let rule = "spec.orgId in body should match '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'";
        assert_eq!(
            rejected.body,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("NavigatorToken.navigator.dev \"t2\" is invalid: spec.orgId: Invalid value: \"not-a-guid\": {rule}"),
                "reason": "Invalid",
                "details": {
                    "name": "t2",
                    "group": "navigator.dev",
                    "kind": "NavigatorToken",
                    "causes": [{
                        "reason": "FieldValueInvalid",
                        "message": format!("Invalid value: \"not-a-guid\": {rule}"),
                        "field": "spec.orgId"
                    }]
                },
                "code": 422
            })
        );
        assert!(api.server.get("navigator.dev/v1alpha1", "navigatortokens", Some("ref"), "t2").is_none());

        // Valid objects pass; invalid updates are rejected too and change nothing.
        assert_eq!(api.post(TOKENS, &ref13_token()).await.code, 201);
        let bad_patch = api.merge(&format!("{TOKENS}/t1"), &json!({"spec": {"orgId": "nope"}})).await;
        assert_eq!(bad_patch.code, 422);
        assert_eq!(api.get(&format!("{TOKENS}/t1")).await.body["spec"]["orgId"], ORG);
    })
    .await;
}

#[tokio::test]
async fn ref_17_event_with_generate_name_then_series_patch() {
    bounded(async {
        let api = Api::start().await;
        let events = "/apis/events.k8s.io/v1/namespaces/ref/events";
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": "t1-"},
            "eventTime": "2026-11-22T19:00:00.000000Z",
            "reportingController": "navigator.dev/navigator-token-operator",
            "reportingInstance": "navigator-token-operator-0",
            "action": "Issue",
            "reason": "Issued",
            "type": "Normal",
            "note": "issued a token valid until 2026-11-22T19:30:00Z",
            "regarding": {"apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken", "namespace": "ref", "name": "t1"}
        });
        let created = api.post(events, &event).await;
        assert_eq!(created.code, 201);
        let name = created.body["metadata"]["name"].as_str().unwrap().to_owned();
        let suffix = name.strip_prefix("t1-").expect("name starts with generateName");
        assert_eq!(suffix.len(), 5);
        assert!(suffix.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "{name}");
        assert_eq!(created.body["metadata"]["generateName"], "t1-");
        assert_eq!(created.body["kind"], "Event");
        assert_eq!(created.body["apiVersion"], "events.k8s.io/v1");
        assert_eq!(created.body["note"], event["note"]);
        assert!(created.body["metadata"].get("generation").is_none());
        let managed = managed_without_time(&created.body);
        assert_eq!(managed[0]["manager"], "python-requests");
        assert_eq!(managed[0]["fieldsV1"]["f:metadata"], json!({"f:generateName": {}}));
        assert_eq!(managed[0]["fieldsV1"]["f:reportingController"], json!({}));

        // kube's Recorder reports a repeat as a merge patch of the whole event with a series.
        let mut repeat = created.body.clone();
        repeat["series"] = json!({"count": 2, "lastObservedTime": "2026-11-22T19:01:00.000000Z"});
        repeat["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        let patched = api.merge(&format!("{events}/{name}"), &repeat).await;
        assert_eq!(patched.code, 200);
        assert_eq!(patched.body["series"]["count"], 2);
        assert!(rv(&patched.body) > rv(&created.body));
    })
    .await;
}

// --- lists and selectors ----------------------------------------------------------------------

fn secret(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque"
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().expect("items").iter().map(|item| item["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn list_pagination_is_sorted_and_consistent() {
    bounded(async {
        let api = Api::start().await;
        for name in ["g", "c", "a", "e", "b", "f", "d"] {
            api.server.insert(secret("p", name, json!({})));
        }
        for name in ["x", "a"] {
            api.server.insert(secret("q", name, json!({})));
        }
        let base = "/api/v1/namespaces/p/secrets";
        let first = api.get(&format!("{base}?limit=3")).await;
        assert_eq!(names(&first.body), ["a", "b", "c"]);
        let list_rv = first.body["metadata"]["resourceVersion"].clone();
        let token = first.body["metadata"]["continue"].as_str().expect("continue").to_owned();

        // A change between pages does not move the list's resourceVersion.
        api.server.insert(secret("p", "h", json!({})));
        let second = api.get(&format!("{base}?limit=3&continue={token}")).await;
        assert_eq!(names(&second.body), ["d", "e", "f"]);
        assert_eq!(second.body["metadata"]["resourceVersion"], list_rv);
        let token = second.body["metadata"]["continue"].as_str().expect("continue").to_owned();
        let third = api.get(&format!("{base}?limit=3&continue={token}")).await;
        assert_eq!(names(&third.body), ["g", "h"]);
        assert!(third.body["metadata"].get("continue").is_none());

        // An exact fit has no further page.
        let exact = api.get(&format!("{base}?limit=8")).await;
        assert_eq!(names(&exact.body).len(), 8);
        assert!(exact.body["metadata"].get("continue").is_none());

        // Cluster-wide: sorted by namespace, then name.
        let all = api.get("/api/v1/secrets").await;
        assert_eq!(all.code, 200);
        assert_eq!(names(&all.body), ["a", "b", "c", "d", "e", "f", "g", "h", "a", "x"]);
        assert_eq!(all.body["items"][8]["metadata"]["namespace"], "q");

        assert_eq!(api.get(&format!("{base}?continue=garbage")).await.code, 400);
        assert_eq!(api.get(&format!("{base}?limit=many")).await.code, 400);
    })
    .await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(secret("s", "one", json!({"app": "x", "tier": "web"})));
        api.server.insert(secret("s", "two", json!({"app": "y", "tier": "db"})));
        api.server.insert(secret("s", "three", json!({"app": "x"})));
        api.server.insert(secret("s", "four", json!({})));
        let select = |selector: &'static str| {
            let path = format!(
                "/api/v1/namespaces/s/secrets?labelSelector={}",
                form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>()
            );
            let api = &api;
            async move {
                let reply = api.get(&path).await;
                assert_eq!(reply.code, 200, "{selector}: {}", reply.body);
                let mut found = names(&reply.body);
                found.sort();
                found
            }
        };
        assert_eq!(select("app=x").await, ["one", "three"]);
        assert_eq!(select("app==x,tier=web").await, ["one"]);
        assert_eq!(select("app!=x").await, ["four", "two"]);
        assert_eq!(select("tier").await, ["one", "two"]);
        assert_eq!(select("!tier").await, ["four", "three"]);
        assert_eq!(select("app in (y, z)").await, ["two"]);
        assert_eq!(select("app notin (x)").await, ["four", "two"]);
        assert_eq!(select("app in (x,y),tier notin (db)").await, ["one", "three"]);
        assert_eq!(select("").await, ["four", "one", "three", "two"]);

        let bad = api.get("/api/v1/namespaces/s/secrets?labelSelector=app%20in%20(x").await;
        assert_eq!(bad.code, 400);
        assert_eq!(bad.body["reason"], "BadRequest");

        let by_name = api.get("/api/v1/secrets?fieldSelector=metadata.name%3Dtwo").await;
        assert_eq!(names(&by_name.body), ["two"]);
        let not_name = api.get("/api/v1/namespaces/s/secrets?fieldSelector=metadata.name!%3Dtwo,metadata.namespace%3Ds").await;
        assert_eq!(names(&not_name.body).len(), 3);
        assert_eq!(api.get("/api/v1/secrets?fieldSelector=nonsense").await.code, 400);
    })
    .await;
}

// --- watches ----------------------------------------------------------------------------------

#[tokio::test]
async fn watch_with_label_selector_sees_objects_enter_and_leave() {
    bounded(async {
        let api = Api::start().await;
        let start = api.server.resource_version();
        let mut watch = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={start}&labelSelector=app%3Dx")).await;
        let path = format!("{SECRETS}/s");
        api.post(SECRETS, &json!({"metadata": {"name": "s"}})).await;
        let joined = api.merge(&path, &json!({"metadata": {"labels": {"app": "x"}}})).await;
        api.merge(&path, &json!({"data": {"k": "dg=="}})).await;
        let left = api.merge(&path, &json!({"metadata": {"labels": {"app": "y"}}})).await;
        api.delete(&path).await;
        api.post(SECRETS, &json!({"metadata": {"name": "marker", "labels": {"app": "x"}}})).await;

        let added = watch.next_change().await;
        assert_eq!(added["type"], "ADDED", "starting to match looks like a creation");
        assert_eq!(rv(&added["object"]), rv(&joined.body));
        let modified = watch.next_change().await;
        assert_eq!(modified["type"], "MODIFIED");
        assert_eq!(modified["object"]["data"]["k"], "dg==");
        let deleted = watch.next_change().await;
        assert_eq!(deleted["type"], "DELETED", "ceasing to match looks like a deletion");
        assert_eq!(rv(&deleted["object"]), rv(&left.body));
        // The real deletion of a non-matching object is not seen; the marker comes next.
        let marker = watch.next_change().await;
        assert_eq!(marker["type"], "ADDED");
        assert_eq!(marker["object"]["metadata"]["name"], "marker");
    })
    .await;
}

#[tokio::test]
async fn watch_without_version_starts_with_current_objects() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(secret("ref", "b", json!({})));
        api.server.insert(secret("ref", "a", json!({})));
        api.server.insert(secret("other", "c", json!({})));

        let mut plain = api.watch(&format!("{SECRETS}?watch=1")).await;
        let first = plain.next().await.unwrap();
        let second = plain.next().await.unwrap();
        assert_eq!((first["type"].as_str(), second["type"].as_str()), (Some("ADDED"), Some("ADDED")));
        assert_eq!(first["object"]["metadata"]["name"], "a");
        assert_eq!(second["object"]["metadata"]["name"], "b");
        plain.expect_quiet(Duration::from_millis(200)).await;

        // Streaming list (kube-runtime's StreamingList): initial events end with a bookmark.
        let mut streaming = api
            .watch(&format!(
                "{SECRETS}?watch=true&resourceVersion=0&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&allowWatchBookmarks=true"
            ))
            .await;
        assert_eq!(streaming.next().await.unwrap()["object"]["metadata"]["name"], "a");
        assert_eq!(streaming.next().await.unwrap()["object"]["metadata"]["name"], "b");
        let end = streaming.next().await.unwrap();
        assert_eq!(end["type"], "BOOKMARK");
        assert_eq!(end["object"]["metadata"]["annotations"], json!({"k8s.io/initial-events-end": "true"}));
        assert_eq!(end["object"]["metadata"]["resourceVersion"], api.server.resource_version().to_string());
    })
    .await;
}

#[tokio::test]
async fn watch_lag_delays_watch_events_only() {
    bounded(async {
        let api = Api::start().await;
        let lag = Duration::from_millis(1000);
        api.server.set_watch_lag("secrets", Some(lag));
        let from = api.server.resource_version();
        let mut secrets = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={from}")).await;
        let mut tokens = api.watch(&format!("{TOKENS}?watch=true&resourceVersion={from}")).await;

        let written = Instant::now();
        assert_eq!(api.post(SECRETS, &json!({"metadata": {"name": "s"}})).await.code, 201);
        // Reads see the write at once: read-your-writes holds, only watchers are late.
        assert_eq!(api.get(&format!("{SECRETS}/s")).await.code, 200);
        assert_eq!(names(&api.get(SECRETS).await.body), ["s"]);
        // Other resources are on time.
        assert_eq!(api.post(TOKENS, &ref13_token()).await.code, 201);
        assert_eq!(tokens.next_change().await["type"], "ADDED");
        assert!(written.elapsed() < lag, "everything but the secrets watch is on time: {:?}", written.elapsed());

        // A watch opened after the write, from before it, is late too.
        let mut later = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={from}")).await;
        let event = secrets.next_change().await;
        assert_eq!(event["object"]["metadata"]["name"], "s");
        assert!(written.elapsed() >= lag, "delivered after {:?}", written.elapsed());
        assert_eq!(later.next_change().await["object"]["metadata"]["name"], "s");

        // Back on time.
        api.server.set_watch_lag("secrets", None);
        let written = Instant::now();
        api.post(SECRETS, &json!({"metadata": {"name": "s2"}})).await;
        assert_eq!(secrets.next_change().await["object"]["metadata"]["name"], "s2");
        assert!(written.elapsed() < lag, "{:?}", written.elapsed());
    })
    .await;
}

#[tokio::test]
async fn watches_end_on_timeout_drop_watches_and_shutdown() {
    bounded(async {
        let api = Api::start().await;
        let started = Instant::now();
        let mut short = api.watch(&format!("{SECRETS}?watch=true&timeoutSeconds=1")).await;
        assert!(short.next().await.is_none());
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");

        let mut a = api.watch(&format!("{SECRETS}?watch=true")).await;
        let mut b = api.watch("/apis/navigator.dev/v1alpha1/navigatortokens?watch=true").await;
        assert_eq!(api.server.active_watches(), 2);
        api.server.drop_watches();
        assert!(a.next().await.is_none());
        assert!(b.next().await.is_none());
        // The streams are gone on the server side too.
        let deadline = Instant::now() + Duration::from_secs(5);
        while api.server.active_watches() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(api.server.active_watches(), 0);

        // Watches opened after drop_watches work normally.
        let mut c = api.watch(&format!("{SECRETS}?watch=true")).await;
        api.post(SECRETS, &json!({"metadata": {"name": "x"}})).await;
        assert_eq!(c.next_change().await["type"], "ADDED");

        api.server.shutdown();
        assert!(c.next().await.is_none());
        assert_stops_answering(&api.server.url()).await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server() {
    bounded(async {
        let api = Api::start().await;
        let url = api.server.url();
        let copy = api.server.clone();
        drop(api.server);
        // A clone keeps it alive.
        assert_eq!(api.http.get(format!("{url}/version")).send().await.unwrap().status(), 200);
        drop(copy);
        assert_stops_answering(&url).await;
    })
    .await;
}

/// The server stops accepting connections soon (its task notices the shutdown asynchronously).
async fn assert_stops_answering(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A fresh client each time: no pooled connection to reuse.
        let client = reqwest::Client::new();
        if client.get(format!("{url}/version")).send().await.is_err() {
            return;
        }
        assert!(Instant::now() < deadline, "the server still answers after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- server-side apply ------------------------------------------------------------------------

#[tokio::test]
async fn apply_removes_fields_the_manager_no_longer_sets() {
    bounded(async {
        let api = Api::start().await;
        let path = format!("{SECRETS}/s");
        let as_a = format!("{path}?fieldManager=a");
        let first = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","labels":{"keep":"1","drop":"2"}},"data":{"x":"eA==","y":"eQ=="}}"#;
        assert_eq!(api.apply(&as_a, first).await.code, 201);
        // b co-owns label "keep" with the same value (no conflict) and adds its own.
        let by_b = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    keep: \"1\"\n    other: b\n";
        let shared = api.apply(&format!("{path}?fieldManager=b"), by_b).await;
        assert_eq!(shared.code, 200, "{}", shared.body);

        // a stops setting both labels and data.y.
        let second = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"x":"eA=="}}"#;
        let after = api.apply(&as_a, second).await;
        assert_eq!(after.code, 200);
        assert_eq!(after.body["metadata"]["labels"], json!({"keep": "1", "other": "b"}), "b still owns keep");
        assert_eq!(after.body["data"], json!({"x": "eA=="}));

        // a drops data entirely: the emptied map goes too.
        let third = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"type":"Opaque"}"#;
        let last = api.apply(&as_a, third).await;
        assert!(last.body.get("data").is_none(), "{}", last.body);
        assert_eq!(last.body["type"], "Opaque");
        let mut managers: Vec<&str> = last.body["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        managers.sort_unstable();
        assert_eq!(managers, ["a", "b"]);
        let a = &last.body["metadata"]["managedFields"].as_array().unwrap().iter().find(|e| e["manager"] == "a").unwrap()["fieldsV1"];
        assert_eq!(*a, json!({"f:type": {}}));
    })
    .await;
}

#[tokio::test]
async fn apply_conflicts_and_force() {
    bounded(async {
        let api = Api::start().await;
        let path = format!("{SECRETS}/s");
        let config = |token: &str| format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: {token}\n  extra: ZQ==\n");
        assert_eq!(api.apply(&format!("{path}?fieldManager=a"), &config("YQ==")).await.code, 201);

        let refused = api.apply(&format!("{path}?fieldManager=b&force=false"), &config("Yg==")).await;
        assert_eq!(refused.code, 409);
        assert_eq!(refused.body["details"]["causes"][0]["field"], ".data.token");
        assert_eq!(refused.body["details"]["causes"].as_array().unwrap().len(), 1, "equal values are shared, not conflicts");

        let forced = api.apply(&format!("{path}?fieldManager=b&force=true"), &config("Yg==")).await;
        assert_eq!(forced.code, 200);
        assert_eq!(forced.body["data"]["token"], "Yg==");
        let entries = forced.body["metadata"]["managedFields"].as_array().unwrap().clone();
        let fields_of = |manager: &str| {
            entries
                .iter()
                .find(|e| e["manager"] == manager)
                .map(|e| e["fieldsV1"].clone())
                .unwrap()
        };
        assert_eq!(fields_of("a"), json!({"f:data": {"f:extra": {}}}), "a lost the forced field");
        assert_eq!(fields_of("b"), json!({"f:data": {"f:extra": {}, "f:token": {}}}));

        // Now a conflicts with b; an Update manager is named with its apiVersion.
        let back = api.apply(&format!("{path}?fieldManager=a"), &config("YQ==")).await;
        assert_eq!(back.code, 409);
        assert_eq!(back.body["message"], "Apply failed with 1 conflict: conflict with \"b\": .data.token");
        api.merge(&path, &json!({"data": {"extra": "Zg=="}})).await;
        let two = api.apply(&format!("{path}?fieldManager=c"), &config("Yw==")).await;
        assert_eq!(two.code, 409);
        assert_eq!(
            two.body["message"],
            "Apply failed with 2 conflicts: conflicts with \"b\":\n- .data.token\nconflicts with \"python-requests\" using v1:\n- .data.extra"
        );
        assert_eq!(two.body["details"]["causes"][1]["message"], "conflict with \"python-requests\" using v1");
    })
    .await;
}

#[tokio::test]
async fn apply_rejects_bad_requests() {
    bounded(async {
        let api = Api::start().await;
        let start = api.server.resource_version();
        let path = format!("{SECRETS}/s");
        let ok = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n";

        let no_manager = api.apply(&path, ok).await;
        assert_eq!(no_manager.code, 422);
        assert_eq!(no_manager.body["reason"], "Invalid");
        assert_eq!(no_manager.body["details"]["causes"][0]["field"], "fieldManager");

        let wrong_version = api.apply(&format!("{path}?fieldManager=m"), "apiVersion: v2\nkind: Secret\nmetadata:\n  name: s\n").await;
        assert_eq!(wrong_version.code, 400);
        let wrong_kind = api.apply(&format!("{path}?fieldManager=m"), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\n").await;
        assert_eq!(wrong_kind.code, 400);
        let wrong_name = api.apply(&format!("{path}?fieldManager=m"), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: other\n").await;
        assert_eq!(wrong_name.code, 400);
        assert_eq!(wrong_name.body["message"], "the name of the object (other) does not match the name on the URL (s)");
        let garbage = api.apply(&format!("{path}?fieldManager=m"), "key: [unclosed").await;
        assert_eq!(garbage.code, 400);
        let status_of_missing = api
            .apply(
                &format!("{TOKENS}/nope/status?fieldManager=m"),
                "apiVersion: navigator.dev/v1alpha1\nkind: NavigatorToken\nmetadata:\n  name: nope\nstatus: {}\n",
            )
            .await;
        assert_eq!(status_of_missing.code, 404);
        assert_eq!(api.server.resource_version(), start, "nothing was written");

        // Apply bodies may be JSON too (kube-rs sends JSON).
        let json_body = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"stringData":{"k":"v"}}"#;
        let created = api.apply(&format!("{path}?fieldManager=m"), json_body).await;
        assert_eq!(created.code, 201);
        assert_eq!(created.body["data"], json!({"k": "dg=="}));
    })
    .await;
}

// --- status subresource, generation, updates --------------------------------------------------

#[tokio::test]
async fn status_subresource_and_generation_rules() {
    bounded(async {
        let api = Api::start().await;
        let t1 = format!("{TOKENS}/t1");
        let mut with_status = ref13_token();
        with_status["status"] = json!({"phase": "ignored on create"});
        let created = api.post(TOKENS, &with_status).await;
        assert!(created.body.get("status").is_none(), "status is dropped on create");

        // Status written through the subresource; metadata/spec changes there are ignored.
        let mut status_put = created.body.clone();
        status_put["status"] = json!({"observedGeneration": 1});
        status_put["spec"]["validity"] = json!("1h");
        let put = api.put(&format!("{t1}/status"), &status_put).await;
        assert_eq!(put.code, 200);
        assert_eq!(put.body["status"], json!({"observedGeneration": 1}));
        assert!(put.body["spec"].get("validity").is_none());
        assert_eq!(put.body["metadata"]["generation"], 1);

        // Through the main resource, status is ignored but spec counts.
        let mut main_put = put.body.clone();
        main_put["status"] = json!({"observedGeneration": 99});
        main_put["spec"]["validity"] = json!("1h");
        let updated = api.put(&t1, &main_put).await;
        assert_eq!(updated.code, 200);
        assert_eq!(updated.body["status"], json!({"observedGeneration": 1}));
        assert_eq!(updated.body["metadata"]["generation"], 2);

        // Labels do not bump generation; neither does a status merge patch.
        let labelled = api.merge(&t1, &json!({"metadata": {"labels": {"a": "b"}}})).await;
        assert_eq!(labelled.body["metadata"]["generation"], 2);
        assert!(rv(&labelled.body) > rv(&updated.body));
        let status_patch = api.merge(&format!("{t1}/status"), &json!({"status": {"observedGeneration": 2}})).await;
        assert_eq!(status_patch.code, 200);
        assert_eq!(status_patch.body["status"]["observedGeneration"], 2);
        assert_eq!(status_patch.body["metadata"]["generation"], 2);
        let spec_patch = api.merge(&t1, &json!({"spec": {"validity": "2h"}})).await;
        assert_eq!(spec_patch.body["metadata"]["generation"], 3);

        // A merge patch that changes nothing is a no-op.
        let noop = api.merge(&t1, &json!({"spec": {"validity": "2h"}})).await;
        assert_eq!(noop.code, 200);
        assert_eq!(rv(&noop.body), rv(&spec_patch.body));

        // Secrets have no status subresource.
        api.server.insert(secret("ref", "s", json!({})));
        assert_eq!(api.get(&format!("{SECRETS}/s/status")).await.code, 404);
        // Any resource can be given one.
        api.server.enable_status_subresource("secrets");
        assert_eq!(api.get(&format!("{SECRETS}/s/status")).await.code, 200);
    })
    .await;
}

#[tokio::test]
async fn put_updates_with_optimistic_concurrency() {
    bounded(async {
        let api = Api::start().await;
        let path = format!("{SECRETS}/s");
        let created = api.post(SECRETS, &json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}})).await;
        let mut next = created.body.clone();
        next["data"]["a"] = json!("Yg==");
        let updated = api.put(&path, &next).await;
        assert_eq!(updated.code, 200);
        assert_eq!(updated.body["data"]["a"], "Yg==");
        assert_eq!(updated.body["metadata"]["uid"], created.body["metadata"]["uid"]);
        assert_eq!(updated.body["metadata"]["creationTimestamp"], created.body["metadata"]["creationTimestamp"]);
        assert!(rv(&updated.body) > rv(&created.body));

        // The first write's resourceVersion is stale now.
        assert_eq!(api.put(&path, &next).await.code, 409);
        // Without a resourceVersion the update is unconditional.
        next["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        next["data"]["a"] = json!("Yw==");
        assert_eq!(api.put(&path, &next).await.code, 200);

        assert_eq!(api.put(&format!("{SECRETS}/missing"), &json!({"metadata": {"name": "missing"}})).await.code, 404);
        let renamed = api.put(&path, &json!({"metadata": {"name": "other"}})).await;
        assert_eq!(renamed.code, 400);
        let other_ns = api.put(&path, &json!({"metadata": {"name": "s", "namespace": "elsewhere"}})).await;
        assert_eq!(other_ns.code, 400);
        // A merge patch can carry a precondition too.
        let stale_patch = api.merge(&path, &json!({"metadata": {"resourceVersion": "2"}, "data": {"a": null}})).await;
        assert_eq!(stale_patch.code, 409);
    })
    .await;
}

#[tokio::test]
async fn json_patch_strategic_merge_and_media_types() {
    bounded(async {
        let api = Api::start().await;
        let path = format!("{SECRETS}/s");
        api.post(SECRETS, &json!({"metadata": {"name": "s", "labels": {"a": "1"}}, "data": {"k": "dg=="}})).await;
        let ops = json!([
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/data/k", "value": "dzI="},
            {"op": "remove", "path": "/metadata/labels/a"}
        ]);
        let patched = api.call("PATCH", &path, Some("application/json-patch+json"), Some(ops.to_string())).await;
        assert_eq!(patched.code, 200);
        assert_eq!(patched.body["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(patched.body["data"]["k"], "dzI=");

        let failing = json!([{"op": "test", "path": "/data/k", "value": "nope"}]);
        let failed = api.call("PATCH", &path, Some("application/json-patch+json"), Some(failing.to_string())).await;
        assert_eq!(failed.code, 422);

        let strategic = json!({"metadata": {"labels": {"c": "3", "$patch": "merge"}}});
        let merged = api.call("PATCH", &path, Some("application/strategic-merge-patch+json"), Some(strategic.to_string())).await;
        assert_eq!(merged.code, 200);
        assert_eq!(merged.body["metadata"]["labels"], json!({"b": "2", "c": "3"}));

        let unsupported = api.call("PATCH", &path, Some("text/plain"), Some("x".into())).await;
        assert_eq!(unsupported.code, 415);
        assert_eq!(unsupported.body["reason"], "UnsupportedMediaType");
        let bad_json = api.call("PATCH", &path, Some(MERGE), Some("{not json".into())).await;
        assert_eq!(bad_json.code, 400);
        assert_eq!(bad_json.body["kind"], "Status");
        assert_eq!(api.merge(&format!("{SECRETS}/missing"), &json!({})).await.code, 404);
    })
    .await;
}

// --- deletion ---------------------------------------------------------------------------------

#[tokio::test]
async fn delete_cascades_through_owner_references() {
    bounded(async {
        let api = Api::start().await;
        let owner = api.post(TOKENS, &ref13_token()).await.body;
        let other = api.server.insert(json!({
            "apiVersion": "navigator.dev/v1alpha1",
            "kind": "NavigatorToken",
            "metadata": {"name": "t2", "namespace": "ref"},
            "spec": {"orgId": ORG}
        }));
        let owned_by = |objs: &[&Value]| -> Value {
            objs.iter()
                .map(|o| {
                    json!({
                        "apiVersion": "navigator.dev/v1alpha1",
                        "kind": "NavigatorToken",
                        "name": o["metadata"]["name"],
                        "uid": o["metadata"]["uid"],
                        "controller": true
                    })
                })
                .collect()
        };
        let mut child = secret("ref", "child", json!({}));
        child["metadata"]["ownerReferences"] = owned_by(&[&owner]);
        api.server.insert(child);
        let mut grandchild = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gc", "namespace": "ref"}});
        let child_stored = api.server.get("v1", "secrets", Some("ref"), "child").unwrap();
        grandchild["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Secret", "name": "child", "uid": child_stored["metadata"]["uid"]}]);
        api.server.insert(grandchild);
        let mut shared = secret("ref", "shared", json!({}));
        shared["metadata"]["ownerReferences"] = owned_by(&[&owner, &other]);
        api.server.insert(shared);

        let mut watch = api.watch(&format!("{SECRETS}?watch=true&resourceVersion={}", api.server.resource_version())).await;
        assert_eq!(api.delete(&format!("{TOKENS}/t1")).await.code, 200);
        let event = watch.next_change().await;
        assert_eq!(event["type"], "DELETED");
        assert_eq!(event["object"]["metadata"]["name"], "child");
        assert!(api.server.get("v1", "secrets", Some("ref"), "child").is_none());
        assert!(api.server.get("v1", "configmaps", Some("ref"), "gc").is_none(), "cascade is transitive");
        assert!(api.server.get("v1", "secrets", Some("ref"), "shared").is_some(), "another owner remains");

        // Removing the last owner directly cascades too.
        assert!(api.server.remove("navigator.dev/v1alpha1", "navigatortokens", Some("ref"), "t2"));
        assert!(!api.server.remove("navigator.dev/v1alpha1", "navigatortokens", Some("ref"), "t2"));
        assert!(api.server.get("v1", "secrets", Some("ref"), "shared").is_none());

        // Orphan leaves dependents alone.
        let parent = api.post(TOKENS, &ref13_token()).await.body;
        let mut orphan = secret("ref", "orphan", json!({}));
        orphan["metadata"]["ownerReferences"] = owned_by(&[&parent]);
        api.server.insert(orphan);
        let orphaned = api.call("DELETE", &format!("{TOKENS}/t1?propagationPolicy=Orphan"), None, None).await;
        assert_eq!(orphaned.code, 200);
        assert!(api.server.get("v1", "secrets", Some("ref"), "orphan").is_some());

        // Preconditions are honoured.
        let stale = json!({"preconditions": {"resourceVersion": "1"}});
        let refused = api.call("DELETE", &format!("{SECRETS}/orphan"), Some("application/json"), Some(stale.to_string())).await;
        assert_eq!(refused.code, 409);

        // deletecollection with a label selector.
        api.server.insert(secret("ref", "l1", json!({"x": "1"})));
        api.server.insert(secret("ref", "l2", json!({"x": "1"})));
        let removed = api.delete(&format!("{SECRETS}?labelSelector=x%3D1")).await;
        assert_eq!(removed.code, 200);
        assert_eq!(names(&removed.body), ["l1", "l2"]);
        assert_eq!(names(&api.get(SECRETS).await.body), ["orphan"]);
    })
    .await;
}

// --- faults and accounting --------------------------------------------------------------------

#[tokio::test]
async fn injected_faults() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(secret("ref", "s", json!({})));
        let path = format!("{SECRETS}/s");
        api.server.inject(Fault::new(Some("get"), Some("secrets"), FaultKind::Status(503), 2));
        for _ in 0..2 {
            let failed = api.get(&path).await;
            assert_eq!(failed.code, 503);
            assert_eq!(failed.body["kind"], "Status");
            assert_eq!(failed.body["reason"], "ServiceUnavailable");
            assert_eq!(failed.body["code"], 503);
        }
        assert_eq!(api.get(&path).await.code, 200, "the fault is used up");
        assert_eq!(api.server.counts().get("get", "secrets"), 3, "faulted requests are counted");

        // 429 carries Retry-After.
        api.server.inject(Fault { verb: None, resource: Some("leases".into()), kind: FaultKind::Status(429), times: 1 });
        assert_eq!(api.get(&path).await.code, 200, "other resources are unaffected");
        let limited = api.get("/apis/coordination.k8s.io/v1/namespaces/ref/leases/l").await;
        assert_eq!(limited.code, 429);
        assert_eq!(limited.body["reason"], "TooManyRequests");
        assert_eq!(limited.headers.get("retry-after").unwrap(), "1");
        assert_eq!(limited.body["details"]["retryAfterSeconds"], 1);

        // A conflict on a status write does not change the object.
        api.post(TOKENS, &ref13_token()).await;
        api.server.inject(Fault::new(Some("patch"), Some("navigatortokens/status"), FaultKind::Status(409), 1));
        let conflict = api.apply(&format!("{TOKENS}/t1/status{OPERATOR_APPLY}"), REF15_APPLY).await;
        assert_eq!(conflict.code, 409);
        assert_eq!(conflict.body["reason"], "Conflict");
        assert_eq!(conflict.body["details"]["name"], "t1");
        assert!(api.get(&format!("{TOKENS}/t1")).await.body.get("status").is_none());
        assert_eq!(api.apply(&format!("{TOKENS}/t1/status{OPERATOR_APPLY}"), REF15_APPLY).await.code, 200);

        for (code, reason) in [(500, "InternalError"), (504, "Timeout"), (409, "Conflict")] {
            api.server.inject(Fault::new(Some("create"), None, FaultKind::Status(code), 1));
            let failed = api.post(SECRETS, &json!({"metadata": {"name": "never"}})).await;
            assert_eq!((failed.code, failed.body["reason"].as_str()), (code, Some(reason)));
        }
        assert!(api.server.get("v1", "secrets", Some("ref"), "never").is_none());

        // A delay, then a normal answer.
        api.server.inject(Fault::new(Some("list"), None, FaultKind::Delay(Duration::from_millis(300)), 1));
        let started = Instant::now();
        assert_eq!(api.get(SECRETS).await.code, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = Instant::now();
        api.get(SECRETS).await;
        assert!(started.elapsed() < Duration::from_millis(300));
    })
    .await;
}

#[tokio::test]
async fn requests_are_counted_by_verb_and_resource() {
    bounded(async {
        let api = Api::start().await;
        // Direct store access is not counted.
        api.server.insert(secret("ref", "s", json!({})));
        api.server.get("v1", "secrets", Some("ref"), "s");
        api.server.list("v1", "secrets", None);
        assert_eq!(api.server.counts().total(), 0);

        api.get(&format!("{SECRETS}/s")).await;
        api.get(SECRETS).await;
        let mut watch = api.watch(&format!("{SECRETS}?watch=true&timeoutSeconds=1")).await;
        api.post(TOKENS, &ref13_token()).await;
        let before = api.server.counts();
        api.apply(&format!("{TOKENS}/t1/status{OPERATOR_APPLY}"), REF15_APPLY).await;
        api.merge(&format!("{TOKENS}/t1"), &json!({"spec": {"validity": "1h"}})).await;
        let current = api.get(&format!("{TOKENS}/t1")).await.body;
        api.put(&format!("{TOKENS}/t1"), &current).await;
        api.delete(&format!("{TOKENS}/t1")).await;
        api.get("/version").await;
        while watch.next().await.is_some() {}

        let counts = api.server.counts();
        assert_eq!(counts.get("get", "secrets"), 1);
        assert_eq!(counts.get("list", "secrets"), 1);
        assert_eq!(counts.get("watch", "secrets"), 1);
        assert_eq!(counts.get("create", "navigatortokens"), 1);
        assert_eq!(counts.get("patch", "navigatortokens/status"), 1);
        assert_eq!(counts.get("patch", "navigatortokens"), 1);
        assert_eq!(counts.get("update", "navigatortokens"), 1);
        assert_eq!(counts.get("delete", "navigatortokens"), 1);
        assert_eq!(counts.get("get", "navigatortokens"), 1);
        assert_eq!(counts.get("get", "version"), 1);
        assert_eq!(counts.by_verb("get"), 3);
        assert_eq!(counts.by_verb("patch"), 2);
        assert_eq!(counts.writes(), 5);
        assert_eq!(counts.total(), 10);

        let delta = counts.delta(&before);
        assert_eq!(delta.total(), 6);
        assert_eq!(delta.writes(), 4);
        assert_eq!(delta.get("create", "navigatortokens"), 0);
        assert_eq!(delta.get("patch", "navigatortokens/status"), 1);
        assert!(delta.to_string().contains("patch navigatortokens/status=1"));

        api.server.reset_counts();
        assert_eq!(api.server.counts().total(), 0);
        assert_eq!(api.server.counts(), Default::default());
    })
    .await;
}

// --- direct access, CRDs, errors --------------------------------------------------------------

#[tokio::test]
async fn direct_insert_get_list_remove() {
    bounded(async {
        let api = Api::start().await;
        let mut watch = api.watch(&format!("{SECRETS}?watch=true&resourceVersion=1")).await;
        let stored = api.server.insert(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ref"},
            "stringData": {"token": "abc"}
        }));
        assert_eq!(stored["data"], json!({"token": "YWJj"}));
        assert_uid(&stored["metadata"]["uid"]);
        assert_eq!(rv(&stored), api.server.resource_version());
        assert_eq!(watch.next_change().await["type"], "ADDED", "inserts are seen by watches");

        let replaced = api.server.insert(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "ref"},
            "data": {"token": "eHl6"}
        }));
        assert_eq!(replaced["metadata"]["uid"], stored["metadata"]["uid"]);
        assert_eq!(replaced["metadata"]["creationTimestamp"], stored["metadata"]["creationTimestamp"]);
        let modified = watch.next_change().await;
        assert_eq!(modified["type"], "MODIFIED");
        assert_eq!(modified["object"]["data"]["token"], "eHl6");

        let token = api.server.insert(json!({
            "apiVersion": "navigator.dev/v1alpha1",
            "kind": "NavigatorToken",
            "metadata": {"name": "t", "namespace": "ref"},
            "spec": {"orgId": ORG}
        }));
        assert_eq!(token["metadata"]["generation"], 1);
        let mut changed = token.clone();
        changed["spec"]["validity"] = json!("1h");
        changed["metadata"].as_object_mut().unwrap().remove("generation");
        assert_eq!(api.server.insert(changed)["metadata"]["generation"], 2);
        let fetched = api.get(&format!("{TOKENS}/t")).await;
        assert_eq!(fetched.body["spec"]["validity"], "1h");

        let generated =
            api.server.insert(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cm-", "namespace": "ref"}}));
        assert!(generated["metadata"]["name"].as_str().unwrap().starts_with("cm-"));
        assert_eq!(api.server.list("v1", "configmaps", Some("ref")).len(), 1);
        assert_eq!(api.server.list("v1", "configmaps", Some("other")).len(), 0);

        assert!(api.server.remove("v1", "secrets", Some("ref"), "s"));
        assert_eq!(watch.next_change().await["type"], "DELETED");
        assert!(api.server.get("v1", "secrets", Some("ref"), "s").is_none());
    })
    .await;
}

#[tokio::test]
async fn crds_register_kinds_and_status_subresources() {
    bounded(async {
        let api = Api::start().await;
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]
            }
        });
        let created = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await;
        assert_eq!(created.code, 201);
        assert!(created.body["metadata"].get("namespace").is_none(), "CRDs are cluster-scoped");
        assert_eq!(created.body["metadata"]["generation"], 1);
        let got = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com").await;
        assert_eq!(got.code, 200);

        // Namespaces are cluster-scoped objects too; writes into one need it to exist.
        let ns = api.post("/api/v1/namespaces", &json!({"metadata": {"name": "w"}})).await;
        assert_eq!(ns.code, 201);
        assert_eq!(ns.body["kind"], "Namespace");
        assert_eq!(api.get("/api/v1/namespaces/w").await.code, 200);
        assert_eq!(names(&api.get("/api/v1/namespaces").await.body), ["ref", "w"]);

        let widgets = "/apis/example.com/v1/namespaces/w/widgets";
        let widget = api.post(widgets, &json!({"metadata": {"name": "w1"}, "spec": {"size": 1}})).await;
        assert_eq!(widget.code, 201);
        assert_eq!(widget.body["kind"], "Widget");
        assert_eq!(widget.body["apiVersion"], "example.com/v1");
        let list = api.get(widgets).await;
        assert_eq!(list.body["kind"], "WidgetList");
        let status = api.merge(&format!("{widgets}/w1/status"), &json!({"status": {"ready": true}})).await;
        assert_eq!(status.code, 200);
        assert_eq!(status.body["status"]["ready"], true);
        assert_eq!(status.body["metadata"]["generation"], 1);
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_get_status_errors() {
    bounded(async {
        let api = Api::start().await;
        let start = api.server.resource_version();
        let bad_json = api.call("POST", SECRETS, Some("application/json"), Some("{oops".into())).await;
        assert_eq!(bad_json.code, 400);
        assert_eq!(bad_json.body["reason"], "BadRequest");
        assert_eq!(bad_json.body["status"], "Failure");

        let not_object = api.call("POST", SECRETS, Some("application/json"), Some("[1]".into())).await;
        assert_eq!(not_object.code, 400);

        let unknown = api.get("/not/a/path").await;
        assert_eq!(unknown.code, 404);
        assert_eq!(unknown.body["reason"], "NotFound");
        assert_eq!(api.get("/api/v1/namespaces/ref/secrets/a/b/c").await.code, 404);

        let wrong_method = api.post(&format!("{SECRETS}/named"), &json!({})).await;
        assert_eq!(wrong_method.code, 405);
        assert_eq!(wrong_method.body["reason"], "MethodNotAllowed");

        let no_name = api.post(SECRETS, &json!({"metadata": {}})).await;
        assert_eq!(no_name.code, 422);
        assert_eq!(no_name.body["details"]["causes"][0]["field"], "metadata.name");
        let bad_name = api.post(SECRETS, &json!({"metadata": {"name": "Not_Valid"}})).await;
        assert_eq!(bad_name.code, 422);
        let wrong_kind = api.post(SECRETS, &json!({"kind": "ConfigMap", "metadata": {"name": "x"}})).await;
        assert_eq!(wrong_kind.code, 400);
        let wrong_version = api.post(SECRETS, &json!({"apiVersion": "v2", "metadata": {"name": "x"}})).await;
        assert_eq!(wrong_version.code, 400);
        let wrong_namespace = api.post(SECRETS, &json!({"metadata": {"name": "x", "namespace": "elsewhere"}})).await;
        assert_eq!(wrong_namespace.code, 400);
        let bad_watch = api.get(&format!("{SECRETS}?watch=true&resourceVersion=abc")).await;
        assert_eq!(bad_watch.code, 400);
        assert_eq!(api.server.resource_version(), start, "nothing was stored");

        let version = api.get("/version").await;
        assert_eq!(version.code, 200);
        assert_eq!(version.body["major"], "1");
        assert!(version.body["gitVersion"].as_str().unwrap().starts_with("v1."));

        // dryRun answers without storing.
        let dry = api.post(&format!("{SECRETS}?dryRun=All"), &json!({"metadata": {"name": "dry"}})).await;
        assert_eq!(dry.code, 201);
        assert_eq!(api.get(&format!("{SECRETS}/dry")).await.code, 404);
    })
    .await;
}

#[tokio::test]
async fn many_concurrent_writes_and_a_watch_keep_up() {
    bounded(async {
        let api = Api::start().await;
        let mut watch =
            api.watch(&format!("{TOKENS}?watch=true&resourceVersion={}&allowWatchBookmarks=true", api.server.resource_version())).await;
        let total = 2000;
        let workers = 16;
        let mut tasks = Vec::new();
        for worker in 0..workers {
            let http = api.http.clone();
            let url = format!("{}{TOKENS}", api.server.url());
            tasks.push(tokio::spawn(async move {
                for i in (worker..total).step_by(workers) {
                    let mut token = ref13_token();
                    token["metadata"]["name"] = json!(format!("t{i:05}"));
                    let response = http.post(&url).json(&token).send().await.expect("create");
                    assert_eq!(response.status().as_u16(), 201);
                }
            }));
        }
        for task in tasks {
            task.await.expect("worker");
        }
        let mut seen = 0;
        while seen < total {
            let event = watch.next_change().await;
            assert_eq!(event["type"], "ADDED");
            seen += 1;
        }

        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(t) => format!("{TOKENS}?limit=500&continue={t}"),
                None => format!("{TOKENS}?limit=500"),
            };
            let page = api.get(&path).await.body;
            listed.extend(names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(listed.len(), total);
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted and without duplicates");
        assert_eq!(api.server.counts().get("create", "navigatortokens"), total as u64);
    })
    .await;
}

const PARTIAL_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const PARTIAL: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() {
    bounded(async {
        let api = Api::start().await;
        api.server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"tenant": "yes"}}}));
        let accept = |value: &'static str| {
            let (http, url) = (api.http.clone(), api.server.url());
            move |path: &str| http.get(format!("{url}{path}")).header("accept", value)
        };
        let list: Value = accept(PARTIAL_LIST)("/api/v1/namespaces").send().await.unwrap().json().await.unwrap();
        assert_eq!((list["kind"].as_str(), list["apiVersion"].as_str()), (Some("PartialObjectMetadataList"), Some("meta.k8s.io/v1")));
        let team_a = list["items"].as_array().unwrap().iter().find(|i| i["metadata"]["name"] == "team-a").unwrap();
        assert_eq!(team_a["kind"], "PartialObjectMetadata");
        assert_eq!(team_a["metadata"]["labels"]["tenant"], "yes");
        assert!(team_a.get("spec").is_none() && team_a.get("status").is_none(), "metadata only: {team_a}");

        // A Secret's data never travels in a metadata-only GET.
        let with_data = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"token": "t0ken"}});
        assert_eq!(api.post(SECRETS, &with_data).await.code, 201);
        let got: Value = accept(PARTIAL)(&format!("{SECRETS}/s")).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["kind"], "PartialObjectMetadata");
        assert!(got.get("data").is_none(), "{got}");
        // Plain requests are unchanged.
        assert!(api.get(&format!("{SECRETS}/s")).await.body.get("data").is_some());

        let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        let response = accept(PARTIAL)(&format!("/api/v1/namespaces?watch=true&resourceVersion={rv}")).send().await.unwrap();
        let mut watch = Watch::new(response);
        let relabel = json!({"metadata": {"labels": {"tenant": "no"}}});
        assert_eq!(api.merge("/api/v1/namespaces/team-a", &relabel).await.code, 200);
        let event = watch.next_change().await;
        assert_eq!((event["type"].as_str(), event["object"]["kind"].as_str()), (Some("MODIFIED"), Some("PartialObjectMetadata")));
        assert_eq!(event["object"]["metadata"]["labels"]["tenant"], "no");
    })
    .await;
}

#[tokio::test]
async fn a_cluster_scoped_resource_has_no_namespaced_path_and_a_purged_namespace_takes_its_objects() {
    bounded(async {
        let api = Api::start().await;
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]},
        });
        assert_eq!(api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", &crd).await.code, 201);
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
        assert_eq!(api.post("/apis/example.com/v1/namespaces/ref/widgets", &widget).await.code, 404);
        assert_eq!(api.post("/apis/example.com/v1/widgets", &widget).await.code, 201);
        assert_eq!(api.get("/apis/example.com/v1/widgets/w").await.code, 200);

        api.post(SECRETS, &secret("ref", "s", json!({}))).await;
        api.server.terminate_namespace("ref");
        assert_eq!(api.post(SECRETS, &secret("ref", "t", json!({}))).await.code, 403, "no creates while terminating");
        api.server.purge_namespace("ref");
        assert_eq!(api.get(&format!("{SECRETS}/s")).await.code, 404);
        assert_eq!(api.get("/api/v1/namespaces/ref").await.code, 404);
        assert_eq!(api.get("/apis/example.com/v1/widgets/w").await.code, 200, "cluster-scoped objects stay");

        // DELETE through the API: answered with the Namespace, Terminating; emptied and gone soon after.
        api.server.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ref"}}));
        assert_eq!(api.post(SECRETS, &secret("ref", "s", json!({}))).await.code, 201);
        let deleted = api.delete("/api/v1/namespaces/ref").await;
        assert_eq!((deleted.code, deleted.body["kind"].as_str()), (200, Some("Namespace")));
        assert_eq!(deleted.body["status"]["phase"], "Terminating");
        assert!(deleted.body["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(api.post(SECRETS, &secret("ref", "t", json!({}))).await.code, 403, "no creates while terminating");
        assert_eq!(api.delete("/api/v1/namespaces/ref").await.code, 409, "a second DELETE, as on a real server");
        let deadline = Instant::now() + Duration::from_secs(5);
        while api.get("/api/v1/namespaces/ref").await.code != 404 {
            assert!(Instant::now() < deadline, "the namespace was never emptied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(api.get(&format!("{SECRETS}/s")).await.code, 404, "its objects went with it");
    })
    .await;
}
