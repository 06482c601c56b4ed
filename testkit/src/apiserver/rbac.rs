//! Authorization: requests denied with [`super::ApiServer::forbid`] get the real server's RBAC
//! answer, 403 Forbidden naming the user, verb, resource and namespace.

use axum::http::HeaderMap;

use super::errors::ApiError;
use super::routes::Target;
use super::shared::{Shared, lock};

/// Who the server says is asking when the request does not impersonate anyone: the operator's
/// service account as deployed (deploy/clusterrolebinding.yaml).
pub(super) const DEFAULT_USER: &str = "system:serviceaccount:navigator-token-operator:navigator-token-operator";

/// Denied (verb, resource) pairs; `*` matches any verb or resource.
pub(super) struct Rbac {
    pub(super) denied: Vec<(String, String)>,
    pub(super) user: String,
}

impl Default for Rbac {
    fn default() -> Rbac {
        Rbac { denied: Vec::new(), user: DEFAULT_USER.to_owned() }
    }
}

impl Shared {
    /// The 403 for a denied request, if it is denied. `resource` is as counted
    /// (`navigatortokens/status` for the status subresource).
    pub(super) fn authorize(&self, verb: &str, resource: &str, t: &Target, headers: &HeaderMap) -> Result<(), ApiError> {
        let rbac = lock(&self.rbac);
        let denied = rbac.denied.iter().any(|(v, r)| (v == "*" || v == verb) && (r == "*" || r == resource));
        if !denied {
            return Ok(());
        }
        // kubectl --as and client-go impersonation; the recording was made that way.
        let user = headers.get("impersonate-user").and_then(|v| v.to_str().ok()).unwrap_or(&rbac.user);
        let scope = match &t.namespace {
            Some(namespace) => format!("in the namespace {namespace:?}"),
            None => "at the cluster scope".to_owned(),
        };
        let why = format!("User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}", t.res.group);
        Err(ApiError::forbidden(&t.res, t.name.as_deref(), &why))
    }
}
