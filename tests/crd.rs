//! The generated CRD: the schema and CEL rules reject bad specs at apply time.

use kube::CustomResourceExt;
use navigator_token_operator::crd::{NavigatorToken, NavigatorTokenSpec};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(NavigatorToken::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn token(spec: Value) -> NavigatorToken {
    serde_json::from_value(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "NavigatorToken",
        "metadata": {"name": "t", "namespace": "team-a"},
        "spec": spec,
    }))
    .unwrap()
}

fn base() -> Value {
    json!({"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4", "credentialsSecretRef": {"name": "partner-oauth-client"}})
}

fn with(patch: Value) -> Value {
    let mut spec = base();
    for (k, v) in patch.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn cel_errors(spec: Value) -> String {
    match token(spec).validate_cel() {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    }
}

#[test]
fn every_spec_field_is_documented_for_kubectl_explain() {
    fn check(path: &str, node: &Value) {
        for (name, prop) in node["properties"].as_object().into_iter().flatten() {
            let here = format!("{path}.{name}");
            assert!(prop["description"].as_str().is_some_and(|d| !d.is_empty()), "{here} has no description");
            check(&here, prop);
        }
    }
    check("spec", &schema());
}

#[test]
fn format_rules_live_in_the_openapi_schema() {
    let spec = schema();
    let org = regex_lite(&spec["properties"]["orgId"]["pattern"]);
    assert!(org.contains("[0-9a-fA-F]{8}-"), "{org}");
    assert_eq!(spec["required"], json!(["credentialsSecretRef", "orgId"]));
    let reference = &spec["properties"]["credentialsSecretRef"]["properties"];
    // Same namespace only: there is no namespace field to point elsewhere.
    assert!(reference.get("namespace").is_none());
    assert_eq!(spec["properties"]["endpoint"]["properties"]["type"]["enum"], json!(["Navigator", "CSP"]));
    assert_eq!(spec["properties"]["target"]["properties"]["deletionPolicy"]["enum"], json!(["Delete", "Retain"]));
    assert!(regex_lite(&spec["properties"]["validity"]["pattern"]).contains("ms|s|m|h"));
}

fn regex_lite(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn a_good_spec_passes_every_cel_rule() {
    let full = with(json!({
        "endpoint": {"type": "CSP", "url": "https://console.cloud.vmware.com", "caBundle": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
        "scope": "openid",
        "validity": "30m",
        "refreshBefore": "10m",
        "target": {"secretName": "x", "accessTokenKey": "token", "idTokenKey": "id", "expiresAtKey": "exp"},
    }));
    assert_eq!(cel_errors(base()), "");
    assert_eq!(cel_errors(full), "");
    assert_eq!(cel_errors(with(json!({"endpoint": {"url": "http://127.0.0.1:8443"}}))), "", "loopback http is allowed for tests");
}

#[test]
fn cel_rejects_contradictions_with_readable_messages() {
    let cases = [
        (json!({"validity": "10m", "refreshBefore": "10m"}), "refreshBefore must be shorter than validity"),
        (json!({"validity": "500ms"}), "validity must be at least 1s"),
        (json!({"refreshBefore": "0s"}), "refreshBefore must be positive"),
        (json!({"scope": "openid"}), "scope is supported only with endpoint.type CSP"),
        (json!({"endpoint": {"url": "http://console.cloud.vmware.com"}}), "url must be https"),
        (json!({"endpoint": {"url": "http://127.0.0.1", "caBundle": "-----BEGIN CERTIFICATE-----"}}), "caBundle needs an https url"),
        (json!({"endpoint": {"caBundle": "not a pem"}}), "caBundle must be PEM certificates"),
        (json!({"target": {"idTokenKey": "token"}}), "idTokenKey must differ from accessTokenKey"),
        (json!({"target": {"accessTokenKey": "a", "expiresAtKey": "a"}}), "expiresAtKey must differ"),
    ];
    for (patch, message) in cases {
        let errors = cel_errors(with(patch.clone()));
        assert!(errors.contains(message), "{patch}: expected {message:?}, got {errors:?}");
    }
}

#[test]
fn only_the_enums_have_schema_defaults_the_rest_is_defaulted_in_code() {
    let text = serde_json::to_string(&NavigatorToken::crd()).unwrap();
    assert_eq!(text.matches("\"default\"").count(), 2, "defaults: endpoint.type and target.deletionPolicy only");
    let spec: NavigatorTokenSpec = serde_json::from_value(base()).unwrap();
    assert_eq!(spec.endpoint_url(), "https://console.navigator.vmware.com");
    assert_eq!(spec.credentials_secret_ref.client_id_key(), "client_id");
    assert_eq!(spec.target().access_token_key(), "token");
    assert_eq!(token(base()).target_secret_name(), "t");
}

#[test]
fn enum_fields_show_values_and_default_in_kubectl_explain_and_are_defaulted_by_the_api_server() {
    let spec = schema();
    let fields = [
        (&spec["properties"]["endpoint"]["properties"]["type"], ["Navigator", "CSP"], "Navigator"),
        (&spec["properties"]["target"]["properties"]["deletionPolicy"], ["Delete", "Retain"], "Delete"),
    ];
    for (field, values, default) in fields {
        assert_eq!(field["enum"], json!(values));
        assert_eq!(field["default"], default);
        // A defaulted field must not be nullable: the API server keeps an explicit null instead.
        assert!(field.get("nullable").is_none(), "{field}");
        // kubectl explain (OpenAPI v2, as in kubectl 1.28) prints only the description.
        let description = field["description"].as_str().unwrap();
        for value in values {
            assert!(description.contains(value), "{description} does not name {value}");
        }
        assert!(description.contains(&format!("default {default}")), "{description}");
    }
    // Objects stored before the defaults (field absent) and after (field set) both read.
    let before = token(with(json!({"endpoint": {}, "target": {}}))).spec;
    let after = token(with(json!({"endpoint": {"type": "Navigator"}, "target": {"deletionPolicy": "Delete"}}))).spec;
    assert_eq!(before.endpoint_type(), after.endpoint_type());
    assert_eq!(before.target().deletion_policy.unwrap_or_default(), after.target().deletion_policy.unwrap());
    // The defaults pass the CEL rules (the API server validates them).
    assert_eq!(cel_errors(with(json!({"endpoint": {"type": "Navigator"}, "target": {"deletionPolicy": "Delete"}}))), "");
}

#[test]
fn duration_rules_are_guarded_so_a_bad_duration_gives_only_the_pattern_error() {
    // CEL rules run even when the OpenAPI pattern fails: an unguarded duration() on `30 minutes`
    // added "type conversion error from 'string' to 'google.protobuf.Duration'".
    let text = serde_json::to_string(&crd()).unwrap();
    let rules: Vec<String> = serde_json::from_str::<Value>(&text)
        .map(|v| collect_rules(&v))
        .unwrap()
        .into_iter()
        .filter(|r| r.contains("duration(self"))
        .collect();
    assert_eq!(rules.len(), 3, "{rules:?}");
    for rule in &rules {
        assert!(rule.contains(".matches("), "unguarded duration() in {rule}");
    }
    for patch in [
        json!({"validity": "30 minutes"}),
        json!({"refreshBefore": "1 hour"}),
        json!({"validity": "30 minutes", "refreshBefore": "10m"}),
        json!({"validity": "30m", "refreshBefore": "ten minutes"}),
    ] {
        assert_eq!(cel_errors(with(patch.clone())), "", "{patch}: only the OpenAPI pattern may complain");
    }
}

/// Every CEL rule in the CRD.
fn collect_rules(node: &Value) -> Vec<String> {
    match node {
        Value::Object(map) => {
            let own = map.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten();
            let mut rules: Vec<String> = own.filter_map(|v| v["rule"].as_str().map(str::to_owned)).collect();
            rules.extend(map.values().flat_map(collect_rules));
            rules
        }
        Value::Array(items) => items.iter().flat_map(collect_rules).collect(),
        _ => Vec::new(),
    }
}

fn crd() -> Value {
    serde_json::to_value(NavigatorToken::crd()).unwrap()
}

#[test]
fn printer_columns_read_right_for_future_times() {
    let crd = crd();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().unwrap().clone();
    // kubectl renders a `date` column as an age: a future time shows `<invalid>`, a past one `117s`.
    for column in &columns {
        let path = column["jsonPath"].as_str().unwrap();
        if column["type"] == "date" {
            assert!(!["expiresAt", "nextRefreshAt"].iter().any(|f| path.ends_with(f)), "{path} is a future time shown as an age");
        }
    }
    let column = |name: &str| columns.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} column")).clone();
    assert_eq!(column("Expires")["jsonPath"], ".status.expiresAt");
    assert_eq!(column("Expires")["type"], "string");
    assert_eq!(column("Reason")["jsonPath"], r#".status.conditions[?(@.type=="Ready")].reason"#);
}
