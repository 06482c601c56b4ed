//! Lists: selection, paging and continue tokens.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::objects::partial_metadata;
use super::routes::{Query, Target, json_response};
use super::selectors::Filter;
use super::store::{ObjKey, Store};

impl Store {
    pub(super) fn list_page(&self, t: &Target, query: &Query) -> Result<ListPage, ApiError> {
        let filter = Filter::new(t, query)?;
        let limit = match query.get("limit") {
            None | Some("") => 0,
            Some(limit) => limit.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        };
        let (rv, after, counted) = match query.get("continue") {
            Some(token) if !token.is_empty() => {
                let (rv, ns, name, counted) = decode_continue(token)?;
                (rv, Some((ns, name)), counted)
            }
            _ => (self.rv, None, None),
        };
        // resourceVersion=0 is served from the watch cache, which does not page (recorded).
        let limit = if query.get("resourceVersion") == Some("0") && after.is_none() { 0 } else { limit };
        let after = after.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str()));
        let mut matching = self.scope(&t.res, t.namespace.as_deref(), after).filter(|(_, obj)| filter.matches(obj));
        let items: Vec<(&ObjKey, &Arc<Value>)> =
            if limit > 0 { matching.by_ref().take(limit).collect() } else { matching.by_ref().collect() };
        // Only promise another page when there is one.
        let last = items.last().map(|(key, _)| (key.1.as_str(), key.2.as_str())).filter(|_| matching.next().is_some());
        // With selectors the real server cannot know how many items are left, and says nothing.
        // Without, the rest is counted once, after the first page, and carried in the continue
        // token (as the real server counts at the list's revision): counting it again on every
        // page made paging through 100,000 objects quadratic.
        let remaining = last.filter(|_| filter.selects_all()).map(|last| match counted {
            Some(before) => before.saturating_sub(items.len()),
            None => self.scope(&t.res, t.namespace.as_deref(), Some(last)).count(),
        });
        let next = last.map(|(ns, name)| encode_continue(rv, ns, name, remaining));
        let items = items.into_iter().map(|(_, obj)| obj.clone()).collect();
        Ok(ListPage { kind: format!("{}List", self.kind_for(&t.res.plural)), api_version: t.api_version(), rv, items, next, remaining })
    }
}

pub(super) struct ListPage {
    kind: String,
    api_version: String,
    rv: u64,
    items: Vec<Arc<Value>>,
    next: Option<String>,
    /// `remainingItemCount`: items after this page.
    remaining: Option<usize>,
}

#[derive(Serialize)]
struct ListBody<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    metadata: Value,
    items: Vec<&'a Value>,
}

impl ListPage {
    pub(super) fn into_response(self, metadata_only: bool) -> Response {
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if let Some(next) = &self.next {
            metadata["continue"] = Value::String(next.clone());
        }
        if let Some(remaining) = self.remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
        if metadata_only {
            let items: Vec<Value> = self.items.iter().map(|item| partial_metadata(item)).collect();
            let body =
                ListBody { kind: "PartialObjectMetadataList", api_version: "meta.k8s.io/v1", metadata, items: items.iter().collect() };
            return json_response(StatusCode::OK, &body);
        }
        let body = ListBody {
            kind: &self.kind,
            api_version: &self.api_version,
            metadata,
            items: self.items.iter().map(|item| item.as_ref()).collect(),
        };
        json_response(StatusCode::OK, &body)
    }
}

/// Continue tokens carry the list's resourceVersion (every page reports the first page's, so a
/// watch from it replays whatever changed meanwhile), the last key returned and, for a list
/// without selectors, how many items were left after the page that made it.
fn encode_continue(rv: u64, namespace: &str, name: &str, remaining: Option<usize>) -> String {
    URL_SAFE_NO_PAD.encode(json!([rv, namespace, name, remaining]).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String, String, Option<usize>), ApiError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid"))
}
