//! The shipped examples do what their comments say: every template in examples/ renders with
//! the operator's own renderer, and the JSON it promises is JSON that carries the token.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use navigator_token_operator::crd::NavigatorToken;
use navigator_token_operator::template::{self, Variables};
use serde::Deserialize;
use serde_json::Value;

/// Every NavigatorToken in examples/*.yaml, with its file name.
fn example_tokens() -> Vec<(String, NavigatorToken)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut tokens = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if value["kind"] == "NavigatorToken" {
                let token = serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                tokens.push((path.file_name().unwrap().to_string_lossy().into_owned(), token));
            }
        }
    }
    tokens
}

#[test]
fn every_example_template_renders_and_its_json_carries_the_token() {
    // A token with characters that need quoting in JSON, to catch a missing `tojson`.
    let access_token = r#"eyJ.to"ken\with<odd>&chars.sig"#;
    let mut rendered_keys = 0;
    for (file, token) in example_tokens() {
        let Some(template) = token.spec.target.as_ref().and_then(|t| t.template.clone()) else { continue };
        let variables = Variables {
            access_token,
            id_token: "",
            issued_at: "2026-11-29T10:00:00Z".parse().unwrap(),
            expires_at: "2026-11-29T10:30:00Z".parse().unwrap(),
            org_id: &token.spec.settings.org_id,
            scope: token.spec.settings.scope.as_deref().unwrap_or_default(),
            name: token.metadata.name.as_deref().unwrap(),
            namespace: token.metadata.namespace.as_deref().unwrap(),
        };
        let out: BTreeMap<String, String> = template::render_all(&template.data, &variables).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (key, text) in &out {
            rendered_keys += 1;
            if key.ends_with(".json") || key == ".dockerconfigjson" {
                let json: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{file} {key} is not JSON ({e}): {text}"));
                assert!(holds(&json, access_token), "{file} {key}: the token is not a JSON string in {text}");
                if key == ".dockerconfigjson" {
                    for auth in json["auths"].as_object().unwrap().values() {
                        assert_eq!(auth["password"], access_token, "{file}");
                        if let Some(encoded) = auth["auth"].as_str() {
                            let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
                            assert_eq!(decoded, format!("{}:{access_token}", auth["username"].as_str().unwrap()), "{file}");
                        }
                    }
                }
            } else {
                assert!(text.contains(access_token), "{file} {key}: no token in {text}");
            }
        }
    }
    assert!(rendered_keys >= 3, "the template examples were not found");
}

/// True when some string in `json` is `value`.
fn holds(json: &Value, value: &str) -> bool {
    match json {
        Value::String(s) => s == value,
        Value::Array(items) => items.iter().any(|v| holds(v, value)),
        Value::Object(map) => map.values().any(|v| holds(v, value)),
        _ => false,
    }
}

#[test]
fn every_example_passes_the_crds_rules_and_each_credential_kind_has_one() {
    use navigator_token_operator::crd::CredentialKind;
    let mut kinds = Vec::new();
    for (file, token) in example_tokens() {
        if let Err(errors) = token.validate_cel() {
            panic!("{file}: {} fails the CRD's CEL rules: {errors:?}", token.metadata.name.as_deref().unwrap_or_default());
        }
        kinds.push((token.spec.credentials_secret_ref.kind(), file));
    }
    for kind in [CredentialKind::ClientCredentials, CredentialKind::ApiToken, CredentialKind::RefreshToken] {
        assert!(kinds.iter().any(|(k, _)| *k == kind), "no example of {kind:?}");
    }
    let file_of = |kind| kinds.iter().find(|(k, _)| *k == kind).map(|(_, f)| f.as_str());
    assert_eq!(file_of(CredentialKind::ApiToken), Some("api-token.yaml"));
    assert_eq!(file_of(CredentialKind::RefreshToken), Some("refresh-token.yaml"));
}

#[test]
fn the_cluster_token_example_passes_its_cel_rules_and_reads_credentials_from_the_operator_namespace() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusternavigatortoken.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = 0;
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).unwrap();
        if value["kind"] != "ClusterNavigatorToken" {
            continue;
        }
        let token: navigator_token_operator::crd::ClusterNavigatorToken = serde_json::from_value(value).unwrap();
        token.validate_cel().unwrap_or_else(|e| panic!("{e:?}"));
        // deploy/ installs the operator in navigator-token-operator: its default allowed namespace.
        assert_eq!(token.spec.credentials_secret_ref.namespace, "navigator-token-operator");
        found += 1;
    }
    assert_eq!(found, 1);
}
