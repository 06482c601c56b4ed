//! Label and field selectors, and how a change looks to a selecting watch.

use serde_json::Value;

use super::errors::ApiError;
use super::objects::plain;
use super::routes::{Query, Target};
use super::store::{Change, Op, Res};

/// What a list or watch selects: resource, namespace, label and field selectors.
#[derive(Clone, Debug)]
pub(super) struct Filter {
    res: Res,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

#[derive(Clone, Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Debug)]
struct FieldRequirement {
    path: Vec<String>,
    equal: bool,
    value: String,
}

impl Filter {
    pub(super) fn new(t: &Target, query: &Query) -> Result<Filter, ApiError> {
        let labels = parse_label_selector(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = parse_field_selector(query.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
        Ok(Filter { res: t.res.clone(), namespace: t.namespace.clone(), labels, fields })
    }

    /// No label or field selector: every object of the resource (and namespace) matches.
    pub(super) fn selects_all(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::Absent(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|req| {
                let mut current = Some(obj);
                for part in &req.path {
                    current = current.and_then(|v| v.get(part));
                }
                let actual = match current {
                    None | Some(Value::Null) => String::new(),
                    Some(value) => plain(value),
                };
                (actual == req.value) == req.equal
            })
    }

    /// How a change looks to this watch, if it sees it at all: objects that start matching
    /// appear as ADDED, objects that stop matching as DELETED.
    pub(super) fn classify(&self, change: &Change) -> Option<&'static str> {
        let (res, namespace, _) = &change.key;
        if *res != self.res || self.namespace.as_ref().is_some_and(|ns| ns != namespace) {
            return None;
        }
        let now = self.matches(&change.object);
        match change.op {
            Op::Added => now.then_some("ADDED"),
            Op::Deleted => now.then_some("DELETED"),
            Op::Modified => {
                let before = change.previous.as_deref().is_some_and(|previous| self.matches(previous));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// Splits at commas that are not inside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_terms(selector).into_iter().map(|term| parse_label_term(term.trim())).collect()
}

fn label_token(token: &str, what: &str) -> Result<String, String> {
    let bad = |c: char| c.is_whitespace() || "=!(),".contains(c);
    if token.contains(bad) || (what == "key" && token.is_empty()) {
        Err(format!("invalid label {what} {token:?}"))
    } else {
        Ok(token.to_owned())
    }
}

fn parse_label_term(term: &str) -> Result<LabelRequirement, String> {
    if term.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::Absent(label_token(key.trim(), "key")?));
    }
    if let Some(open) = term.find('(') {
        let values = term[open + 1..].strip_suffix(')').ok_or_else(|| format!("missing ')' in {term:?}"))?;
        let values = values.split(',').map(|v| label_token(v.trim(), "value")).collect::<Result<Vec<_>, _>>()?;
        let mut head = term[..open].split_whitespace();
        let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
            return Err(format!("expected \"key in (values)\" in {term:?}"));
        };
        let key = label_token(key, "key")?;
        return match op {
            "in" => Ok(LabelRequirement::In(key, values)),
            "notin" => Ok(LabelRequirement::NotIn(key, values)),
            _ => Err(format!("unknown operator {op:?} in {term:?}")),
        };
    }
    let pair = |sep: &str| {
        term.split_once(sep).map(|(k, v)| -> Result<_, String> { Ok((label_token(k.trim(), "key")?, label_token(v.trim(), "value")?)) })
    };
    if let Some(pair) = pair("!=") {
        let (k, v) = pair?;
        return Ok(LabelRequirement::NotEquals(k, v));
    }
    if let Some(pair) = pair("==").or_else(|| pair("=")) {
        let (k, v) = pair?;
        return Ok(LabelRequirement::Equals(k, v));
    }
    Ok(LabelRequirement::Exists(label_token(term, "key")?))
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    selector
        .split(',')
        .map(|term| {
            let term = term.trim();
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {term:?}"));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("invalid field selector: {term:?}"));
            }
            Ok(FieldRequirement { path: key.split('.').map(str::to_owned).collect(), equal, value: value.trim().to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector_parsing() {
        assert!(parse_label_selector("a in (x,y),!b,c!=d,e==f,g=h,i notin (j),k").is_ok());
        assert!(parse_label_selector("a in (x").is_err());
        assert!(parse_label_selector("a b").is_err());
        assert!(parse_label_selector("a=b,,c").is_err());
    }
}
