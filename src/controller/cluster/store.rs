//! Where a ClusterNavigatorToken's current token lives out of every tenant's reach.
//!
//! Tenants can write the copies in their own namespaces, annotations included, so nothing about
//! the shared token (its value, issue and expiry time) is ever read back from them. The operator
//! keeps the token in memory and writes it, before any namespace gets it, to a Secret of its own
//! in the credentials namespace (`<name>-clusternavigatortoken`), which only the operator and
//! the cluster admin can write. After a restart or a change of leader it is read back from there
//! (one GET per ClusterNavigatorToken), and every namespace's copy is checked against it.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

use crate::controller::refresh_store::suffixed_name;
use crate::controller::secret::{TokenMaterial, TokenTimes, carries_managed_label};
use crate::controller::status::rfc3339;
use crate::crd::ClusterNavigatorToken;
use crate::redact::Sensitive;
use crate::{EXPIRES_AT_ANNOTATION, INPUTS_FINGERPRINT_ANNOTATION, ISSUED_AT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Annotation on the store Secret: the ClusterNavigatorToken whose token it holds.
pub const STORE_OF_ANNOTATION: &str = "navigator.dev/cluster-token-of";
const ACCESS_TOKEN_KEY: &str = "accessToken";
const ID_TOKEN_KEY: &str = "idToken";

/// The store Secret's name in the credentials namespace.
pub fn store_name(cnvt_name: &str) -> String {
    suffixed_name(cnvt_name, "-clusternavigatortoken")
}

/// The store Secret holding `material`, issued from the inputs `inputs_fp`, for server-side
/// apply. Owned by the ClusterNavigatorToken: it goes with it.
pub fn desired(cnvt: &ClusterNavigatorToken, material: &TokenMaterial, inputs_fp: &str) -> Secret {
    let name = cnvt.name_any();
    let mut data = BTreeMap::from([(ACCESS_TOKEN_KEY.to_owned(), ByteString(material.access_token.expose().as_bytes().to_vec()))]);
    if let Some(id_token) = &material.id_token {
        data.insert(ID_TOKEN_KEY.to_owned(), ByteString(id_token.expose().as_bytes().to_vec()));
    }
    let annotations = [
        (STORE_OF_ANNOTATION, name.clone()),
        (ISSUED_AT_ANNOTATION, rfc3339(material.times.issued_at)),
        (EXPIRES_AT_ANNOTATION, rfc3339(material.times.expires_at)),
        (INPUTS_FINGERPRINT_ANNOTATION, inputs_fp.to_owned()),
    ];
    Secret {
        metadata: ObjectMeta {
            name: Some(store_name(&name)),
            namespace: Some(cnvt.spec.credentials_secret_ref.namespace.clone()),
            labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into()),
            annotations: Some(annotations.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
            owner_references: cnvt.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The token a store Secret holds for `cnvt` and the inputs fingerprint it was issued from;
/// `None` when the Secret is not this object's store (another name or owner, say a deleted
/// and re-created ClusterNavigatorToken of the same name) or holds nothing usable.
pub fn read(secret: &Secret, cnvt: &ClusterNavigatorToken) -> Option<(TokenMaterial, String)> {
    let annotation = |key: &str| secret.annotations().get(key).map(String::as_str);
    let ours = carries_managed_label(secret)
        && annotation(STORE_OF_ANNOTATION) == cnvt.metadata.name.as_deref()
        && secret.owner_references().iter().any(|r| Some(&r.uid) == cnvt.metadata.uid.as_ref());
    if !ours {
        return None;
    }
    let time = |key: &str| annotation(key)?.parse().ok();
    let times = TokenTimes { issued_at: time(ISSUED_AT_ANNOTATION)?, expires_at: time(EXPIRES_AT_ANNOTATION)? };
    let text = |key: &str| {
        let value = std::str::from_utf8(&secret.data.as_ref()?.get(key)?.0).ok()?;
        (!value.is_empty()).then(|| Sensitive::new(value))
    };
    let material = TokenMaterial { access_token: text(ACCESS_TOKEN_KEY)?, id_token: text(ID_TOKEN_KEY), times };
    Some((material, annotation(INPUTS_FINGERPRINT_ANNOTATION)?.to_owned()))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;

    fn cnvt(uid: &str) -> ClusterNavigatorToken {
        serde_json::from_value(json!({
            "apiVersion": "navigator.dev/v1alpha1", "kind": "ClusterNavigatorToken",
            "metadata": {"name": "vendor", "uid": uid},
            "spec": {"orgId": "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
                     "credentialsSecretRef": {"name": "creds", "namespace": "platform"},
                     "target": {"namespaces": ["a"]}},
        }))
        .unwrap()
    }

    #[test]
    fn the_store_gives_back_exactly_what_was_kept_and_only_to_its_owner() {
        let issued_at: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        let material = TokenMaterial {
            access_token: Sensitive::new("eyJ.shared-access.sig"),
            id_token: Some(Sensitive::new("eyJ.id.sig")),
            times: TokenTimes { issued_at, expires_at: issued_at + jiff::SignedDuration::from_mins(30) },
        };
        let owner = cnvt("u-1");
        let written = desired(&owner, &material, "inputs-1");
        assert_eq!((written.name_any(), written.namespace().as_deref()), ("vendor-clusternavigatortoken".to_owned(), Some("platform")));
        let (read_back, inputs) = read(&written, &owner).expect("its own store");
        assert_eq!(read_back.access_token, material.access_token);
        assert_eq!(read_back.id_token, material.id_token);
        assert_eq!((read_back.times, inputs.as_str()), (material.times, "inputs-1"));
        // A ClusterNavigatorToken re-created under the same name has another uid.
        assert!(read(&written, &cnvt("u-2")).is_none());
        let mut unlabelled = written.clone();
        unlabelled.labels_mut().clear();
        assert!(read(&unlabelled, &owner).is_none());
        let mut emptied = written;
        emptied.data = Some(BTreeMap::new());
        assert!(read(&emptied, &owner).is_none());
    }
}
