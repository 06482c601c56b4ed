//! The generated CRD: the schema and CEL rules reject bad specs at apply time.

use kube::CustomResourceExt;
use navigator_token_operator::crd::{ClusterNavigatorToken, NavigatorToken, NavigatorTokenSpec};
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
    assert_eq!(spec.settings.endpoint_url(), "https://console.navigator.vmware.com");
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
    assert_eq!(before.settings.endpoint_type(), after.settings.endpoint_type());
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

/// The oldest supported Kubernetes minor version (1.x), as docs/operations.md states it.
const KUBERNETES_FLOOR: u32 = 27;

/// Fields of an `x-kubernetes-validations` rule and the 1.x release each appeared in (on by
/// default): messageExpression 1.27, reason and fieldPath 1.28, optionalOldSelf with validation
/// ratcheting (beta, on by default) 1.30.
const RULE_FIELDS: &[(&str, u32)] =
    &[("rule", 25), ("message", 25), ("messageExpression", 27), ("reason", 28), ("fieldPath", 28), ("optionalOldSelf", 30)];

/// CEL functions and macros in every Kubernetes release with CRD validation rules (1.25+): the
/// standard definitions and macros, extended strings v1, and the Kubernetes list, regex and URL
/// libraries. Newer ones (quantity and optional types 1.29, strings v2 1.30, IP/CIDR 1.31,
/// format 1.32, two-variable comprehensions 1.33, semver 1.34) are missing on purpose: using
/// one fails below until the floor is raised.
const CEL_FUNCTIONS_SINCE_1_25: &[&str] = &[
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "size",
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "duration",
    "timestamp",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "dyn",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "replace",
    "split",
    "join",
    "substring",
    "trim",
    "isSorted",
    "sum",
    "min",
    "max",
    "find",
    "findAll",
    "isURL",
    "url",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
    "getQuery",
];

/// Schema keywords of apiextensions.k8s.io/v1 (1.16) and CEL rules (1.25). Anything else, such as
/// a CRD feature from a later release, fails until it is checked against the floor and added.
const SCHEMA_KEYWORDS: &[&str] = &[
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "nullable",
    "default",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    // In apiextensions.k8s.io/v1's JSONSchemaProps since it became GA (1.16).
    "maxProperties",
    "title",
    "x-kubernetes-validations",
];

#[test]
fn the_crd_uses_nothing_newer_than_the_supported_kubernetes_floor() {
    let crds = [crd(), serde_json::to_value(ClusterNavigatorToken::crd()).unwrap()];
    let mut problems = Vec::new();
    for version in crds.iter().flat_map(|crd| crd["spec"]["versions"].as_array().unwrap()) {
        for key in version.as_object().unwrap().keys() {
            // selectableFields (1.31) and the like are not among these.
            if !["name", "served", "storage", "schema", "subresources", "additionalPrinterColumns", "deprecated"].contains(&key.as_str()) {
                problems.push(format!("spec.versions[].{key} is not checked against the floor"));
            }
        }
        check_schema("", &version["schema"]["openAPIV3Schema"], &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

fn check_schema(path: &str, node: &Value, problems: &mut Vec<String>) {
    for (key, value) in node.as_object().unwrap() {
        if !SCHEMA_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!("{path}: schema keyword {key} is not checked against the floor"));
        }
        match key.as_str() {
            "properties" => {
                value.as_object().unwrap().iter().for_each(|(name, child)| check_schema(&format!("{path}.{name}"), child, problems))
            }
            "items" | "additionalProperties" if value.is_object() => check_schema(&format!("{path}[]"), value, problems),
            "x-kubernetes-validations" => {
                for rule in value.as_array().unwrap() {
                    for field in rule.as_object().unwrap().keys() {
                        match RULE_FIELDS.iter().find(|(name, _)| name == field) {
                            Some((_, since)) if *since <= KUBERNETES_FLOOR => {}
                            Some((_, since)) => problems.push(format!("{path}: rule field {field} needs 1.{since}")),
                            None => problems.push(format!("{path}: rule field {field} is not checked against the floor")),
                        }
                    }
                    let text = rule["rule"].as_str().unwrap();
                    for function in cel_calls(text) {
                        if !CEL_FUNCTIONS_SINCE_1_25.contains(&function.as_str()) {
                            problems.push(format!("{path}: CEL function {function}() is not known to be in 1.{KUBERNETES_FLOOR}: {text}"));
                        }
                    }
                    if without_literals(text).contains(".?") {
                        problems.push(format!("{path}: CEL optional field syntax needs 1.29: {text}"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// CEL text with the contents of string literals removed (they may hold anything, e.g. regexes).
fn without_literals(rule: &str) -> String {
    let (mut out, mut quote, mut escaped) = (String::new(), None, false);
    for c in rule.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// Names of the functions and macros a CEL expression calls (identifiers followed by `(`).
fn cel_calls(rule: &str) -> Vec<String> {
    let text = without_literals(rule);
    let mut calls = Vec::new();
    let mut name = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            name.push(c);
        } else {
            if c == '(' && !name.is_empty() && !name.starts_with(|d: char| d.is_ascii_digit()) {
                calls.push(name.clone());
            }
            name.clear();
        }
    }
    calls
}

#[test]
fn the_floor_check_sees_newer_cel_and_rule_fields() {
    let mut problems = Vec::new();
    let schema = json!({"type": "object", "x-kubernetes-validations": [
        {"rule": "isQuantity(self.q) && self.matches('a(b)?')", "messageExpression": "'x'", "fieldPath": ".q"},
        {"rule": "self.?q.orValue('') == ''"},
    ]});
    check_schema("spec", &schema, &mut problems);
    let text = format!("{problems:?}");
    for expected in ["isQuantity()", "orValue()", "fieldPath needs 1.28", "optional field syntax"] {
        assert!(text.contains(expected), "{expected} not reported: {text}");
    }
    assert!(!text.contains("matches()") && !text.contains("messageExpression"), "{text}");
}

#[test]
fn templates_and_rollout_targets_are_checked_at_apply_time() {
    let template = |t: Value| with(json!({"target": {"template": t}}));
    let key_errors = cel_errors(template(json!({"data": {"bad key!": "{{ accessToken }}"}})));
    assert!(key_errors.contains("template.data keys must be valid Secret keys"), "{key_errors}");
    let clash = cel_errors(template(json!({"data": {"token": "Bearer {{ accessToken }}"}})));
    assert!(clash.contains("template.data keys must differ from accessTokenKey"), "{clash}");
    assert_eq!(cel_errors(template(json!({"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "{}"}}))), "");
    let targets = with(json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "app"}, {"kind": "DaemonSet", "name": "agent"}]}));
    assert_eq!(cel_errors(targets.clone()), "");
    assert_eq!(token(targets).spec.rollout_targets().len(), 2);
    let target_schema = &schema()["properties"]["rolloutRestartTargets"];
    assert_eq!(target_schema["items"]["properties"]["kind"]["enum"], json!(["Deployment", "StatefulSet", "DaemonSet"]));
    assert_eq!(target_schema["maxItems"], 16);
}

#[test]
fn the_secret_type_changes_only_together_with_the_secret_name() {
    let spec = |t: Option<&str>, name: Option<&str>| {
        let mut target = json!({});
        if let Some(t) = t {
            target["template"] = json!({"type": t});
        }
        if let Some(name) = name {
            target["secretName"] = json!(name);
        }
        token(with(json!({"target": target})))
    };
    let update = |new: &NavigatorToken, old: &NavigatorToken| match new.validate_cel_update(old) {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    };
    let opaque = spec(None, None);
    let docker = spec(Some("kubernetes.io/dockerconfigjson"), None);
    assert!(update(&docker, &opaque).contains("target.template.type cannot change"), "Opaque -> dockerconfigjson in place");
    assert!(update(&opaque, &docker).contains("target.template.type cannot change"));
    assert_eq!(update(&spec(Some("Opaque"), None), &opaque), "", "an explicit Opaque is the default");
    assert_eq!(update(&spec(Some("kubernetes.io/dockerconfigjson"), Some("registry")), &opaque), "", "a new Secret may have a new type");
}

#[test]
fn credential_kinds_are_checked_at_apply_time_and_the_messages_name_the_clashing_fields() {
    let csp = json!({"type": "CSP"});
    let api_token = |extra: Value, endpoint: Value| {
        let mut reference = json!({"name": "partner-api-token", "apiTokenKey": "api_token"});
        reference.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        with(json!({"credentialsSecretRef": reference, "endpoint": endpoint}))
    };
    assert_eq!(cel_errors(api_token(json!({}), csp.clone())), "", "an API token with CSP");
    assert_eq!(
        cel_errors(api_token(json!({"publicClient": false}), csp.clone())),
        "",
        "an explicit publicClient: false clashes with nothing"
    );
    let cases = [
        (api_token(json!({}), json!({})), "apiTokenKey needs endpoint.type CSP"),
        (api_token(json!({}), json!({"type": "Navigator"})), "apiTokenKey needs endpoint.type CSP"),
        (api_token(json!({"clientIdKey": "id"}), csp.clone()), "apiTokenKey and credentialsSecretRef.clientIdKey cannot be used together"),
        (
            api_token(json!({"clientSecretKey": "s"}), csp.clone()),
            "apiTokenKey and credentialsSecretRef.clientSecretKey cannot be used together",
        ),
        (
            api_token(json!({"publicClient": true}), csp.clone()),
            "apiTokenKey and credentialsSecretRef.publicClient cannot be used together",
        ),
        (
            api_token(json!({"refreshTokenKey": "r"}), csp.clone()),
            "apiTokenKey and credentialsSecretRef.refreshTokenKey cannot be used together",
        ),
        (
            with(json!({"credentialsSecretRef": {"name": "c", "refreshTokenKey": "refresh_token"}})),
            "refreshTokenKey needs endpoint.type CSP",
        ),
    ];
    for (spec, message) in cases {
        let errors = cel_errors(spec.clone());
        assert!(errors.contains(message), "{spec}: expected {message:?}, got {errors:?}");
    }
    // Each clash is its own message: one rule per pair, so the message names exactly it.
    let clash = cel_errors(api_token(json!({"clientIdKey": "id"}), csp.clone()));
    assert!(!clash.contains("refreshTokenKey cannot"), "{clash}");
    let refresh =
        with(json!({"credentialsSecretRef": {"name": "c", "clientIdKey": "id", "refreshTokenKey": "refresh_token"}, "endpoint": csp}));
    assert_eq!(cel_errors(refresh), "", "a refresh token goes with client credentials");
    let reference = &schema()["properties"]["credentialsSecretRef"]["properties"];
    for key in ["apiTokenKey", "refreshTokenKey"] {
        assert_eq!(regex_lite(&reference[key]["pattern"]), "^[-._a-zA-Z0-9]+$", "{key} must be a valid Secret key");
    }
}

fn cluster_token(spec: Value) -> ClusterNavigatorToken {
    serde_json::from_value(json!({
        "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken", "metadata": {"name": "vendor"}, "spec": spec,
    }))
    .unwrap()
}

fn cluster_spec(target: Value) -> Value {
    json!({
        "orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
        "credentialsSecretRef": {"name": "partner-oauth-client", "namespace": "navigator-token-operator"},
        "target": target,
    })
}

#[test]
fn the_cluster_kind_is_cluster_scoped_and_names_where_it_writes() {
    let crd = serde_json::to_value(ClusterNavigatorToken::crd()).unwrap();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["cnvt"]));
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], json!(["credentialsSecretRef", "orgId", "target"]));
    // Restarting workloads across namespaces makes no sense for a shared token: not offered.
    assert!(spec["properties"].get("rolloutRestartTargets").is_none());
    let reference = &spec["properties"]["credentialsSecretRef"];
    assert_eq!(reference["required"], json!(["name", "namespace"]));
    assert!(reference["properties"]["clientSecretKey"].is_object(), "the NavigatorToken's credential keys are reused");
    let target = &spec["properties"]["target"]["properties"];
    for field in ["namespaceSelector", "namespaces", "secretName", "template", "deletionPolicy"] {
        assert!(target[field].is_object(), "target.{field}");
    }
    let columns: Vec<&str> =
        crd["spec"]["versions"][0]["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(columns, ["Org", "Secret", "Namespaces", "Written", "Failed", "Ready", "Reason", "Expires", "Age"]);
    fn documented(path: &str, node: &Value) {
        for (name, prop) in node["properties"].as_object().into_iter().flatten() {
            let here = format!("{path}.{name}");
            assert!(prop["description"].as_str().is_some_and(|d| !d.is_empty()), "{here} has no description");
            documented(&here, prop);
        }
    }
    documented("spec", spec);
}

#[test]
fn a_cluster_token_must_name_namespaces_or_a_selector() {
    let errors = |target: Value| match cluster_token(cluster_spec(target)).validate_cel() {
        Ok(()) => String::new(),
        Err(errors) => format!("{errors:?}"),
    };
    assert!(errors(json!({})).contains("namespaceSelector or namespaces"));
    assert!(errors(json!({"namespaces": []})).contains("namespaceSelector or namespaces"));
    assert_eq!(errors(json!({"namespaces": ["team-a"]})), "");
    assert_eq!(errors(json!({"namespaceSelector": {"matchLabels": {"tenant": "yes"}}})), "");
    // The NavigatorToken's target rules hold here too.
    assert!(errors(json!({"namespaces": ["a"], "accessTokenKey": "k", "idTokenKey": "k"})).contains("idTokenKey must differ"));
}

#[test]
fn a_cluster_token_takes_api_tokens_at_csp_but_no_refresh_token_chain() {
    let errors = |reference: Value, endpoint: Value| {
        let mut spec = cluster_spec(json!({"namespaces": ["team-a"]}));
        spec["credentialsSecretRef"].as_object_mut().unwrap().extend(reference.as_object().unwrap().clone());
        spec["endpoint"] = endpoint;
        match cluster_token(spec).validate_cel() {
            Ok(()) => String::new(),
            Err(errors) => format!("{errors:?}"),
        }
    };
    let csp = json!({"type": "CSP"});
    assert_eq!(errors(json!({"apiTokenKey": "api_token"}), csp.clone()), "");
    assert!(errors(json!({"apiTokenKey": "api_token"}), json!({})).contains("apiTokenKey needs endpoint.type CSP"));
    assert!(
        errors(json!({"apiTokenKey": "api_token", "clientIdKey": "id"}), csp.clone()).contains("cannot be used together"),
        "the NavigatorToken's credential rules hold here too"
    );
    assert!(errors(json!({"refreshTokenKey": "refresh_token"}), csp).contains("not supported on a ClusterNavigatorToken"));
}

/// The column headers `kubectl get` prints for a CRD: NAME, then each printer column of
/// priority 0, upper-cased.
fn printed_columns(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> String {
    let columns = crd.spec.versions[0].additional_printer_columns.clone().unwrap_or_default();
    let shown = columns.iter().filter(|c| c.priority.unwrap_or(0) == 0).map(|c| c.name.to_uppercase());
    std::iter::once("NAME".to_owned()).chain(shown).collect::<Vec<_>>().join("  ")
}

#[test]
fn the_docs_show_the_columns_kubectl_get_prints() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = ["README.md", "docs/operations.md"].map(|f| std::fs::read_to_string(root.join(f)).unwrap()).join("\n");
    let mut checked = 0;
    for (command, crd) in [("get nvt", NavigatorToken::crd()), ("get cnvt", ClusterNavigatorToken::crd())] {
        let want = printed_columns(&crd);
        for line in docs.lines().filter(|l| l.contains(command) && l.contains("# NAME")) {
            let shown = line.split("# ").nth(1).unwrap().split_whitespace().collect::<Vec<_>>().join("  ");
            assert_eq!(shown, want, "{line}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "the README shows both headers");
}

#[test]
fn the_schemas_use_only_formats_kubernetes_knows() {
    // An unknown format (schemars writes "uint32" for u32) makes every apply of the CRD warn.
    fn formats(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(format)) = map.get("format") {
                    found.push(format.clone());
                }
                map.values().for_each(|v| formats(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
            _ => {}
        }
    }
    let known = ["int32", "int64", "float", "double", "byte", "date", "date-time", "password", "duration", "uri", "email"];
    for crd in [serde_json::to_value(NavigatorToken::crd()).unwrap(), serde_json::to_value(ClusterNavigatorToken::crd()).unwrap()] {
        let mut found = Vec::new();
        formats(&crd, &mut found);
        assert!(!found.is_empty());
        for format in found {
            assert!(known.contains(&format.as_str()), "{format} in {}", crd["metadata"]["name"]);
        }
    }
}
