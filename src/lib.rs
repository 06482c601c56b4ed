//! navigator-token-operator: keeps VMware Cloud Partner Navigator / CSP access tokens fresh
//! in Kubernetes Secrets.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api_counter;
pub mod controller;
pub mod crd;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub mod kubeconfig;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod reasons;
pub mod redact;
pub mod template;
pub mod token;

/// Field manager for every server-side apply this operator makes.
pub const FIELD_MANAGER: &str = "navigator-token-operator";
/// Label on every Secret the operator writes; its watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "navigator-token-operator";
/// Label a credentials Secret must carry so that the operator watches (and caches) it.
pub const CREDENTIALS_LABEL: &str = "navigator.dev/credentials";
/// Label on a Secret written for a ClusterNavigatorToken, naming it (with [`TOKEN_NAME_ANNOTATION`]
/// too). A NavigatorToken treats such a Secret as foreign, and the ClusterNavigatorToken any
/// Secret without it: the first writer owns a Secret.
pub const CLUSTER_TOKEN_LABEL: &str = "navigator.dev/cluster-token";
/// Annotation on a managed Secret naming the NavigatorToken that owns it.
pub const TOKEN_NAME_ANNOTATION: &str = "navigator.dev/token";
/// Annotation on a managed Secret: when the token in it expires (RFC 3339).
pub const EXPIRES_AT_ANNOTATION: &str = "navigator.dev/expires-at";
/// Annotation on a managed Secret: when the token in it was issued (RFC 3339).
pub const ISSUED_AT_ANNOTATION: &str = "navigator.dev/issued-at";
/// Annotation on a managed Secret: fingerprint of the access token, to notice hand edits.
pub const TOKEN_FINGERPRINT_ANNOTATION: &str = "navigator.dev/token-sha256";
/// Annotation on a managed Secret: fingerprint of everything the token was issued from.
pub const INPUTS_FINGERPRINT_ANNOTATION: &str = "navigator.dev/inputs-sha256";
/// Annotation a user sets on a NavigatorToken to force a new token (any new value).
pub const REFRESH_REQUESTED_ANNOTATION: &str = "navigator.dev/refresh-requested-at";

/// Errors of the Kubernetes side of a reconcile. Upstream token errors are [`token::TokenError`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call {operation} failed: {source}")]
    Kube {
        /// What the operator was doing.
        operation: &'static str,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The object lacks a field every object read from the API server has.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// Serialising an object for the API server failed.
    #[error("could not serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps a kube client error with the operation that failed.
    pub fn kube(operation: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { operation, source: Box::new(source) }
    }
}

/// Creates or updates the NavigatorToken and ClusterNavigatorToken CRDs (server-side apply), for
/// `run --install-crd`.
pub async fn install_crd(client: &kube::Client) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [crd::NavigatorToken::crd(), crd::ClusterNavigatorToken::crd()] {
        let name = crd.metadata.name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await.map_err(Error::kube("apply CRD"))?;
    }
    Ok(())
}
