//! The names a template can use (variables, filters, tags) and suggestions for near misses.

/// A documented variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Variable {
    AccessToken,
    IdToken,
    TokenType,
    IssuedAt,
    IssuedAtUnix,
    ExpiresAt,
    ExpiresAtUnix,
    OrgId,
    Scope,
    Name,
    Namespace,
}

/// Every variable by its name, in the documented order.
pub(super) const VARIABLES: &[(&str, Variable)] = &[
    ("accessToken", Variable::AccessToken),
    ("idToken", Variable::IdToken),
    ("tokenType", Variable::TokenType),
    ("issuedAt", Variable::IssuedAt),
    ("issuedAtUnix", Variable::IssuedAtUnix),
    ("expiresAt", Variable::ExpiresAt),
    ("expiresAtUnix", Variable::ExpiresAtUnix),
    ("orgId", Variable::OrgId),
    ("scope", Variable::Scope),
    ("name", Variable::Name),
    ("namespace", Variable::Namespace),
];

/// A filter (`{{ value | filter }}`); none takes arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    B64Encode,
    ToJson,
    Upper,
    Lower,
    Trim,
}

/// Every filter by its name.
pub(super) const FILTERS: &[(&str, Filter)] = &[
    ("b64encode", Filter::B64Encode),
    ("tojson", Filter::ToJson),
    ("upper", Filter::Upper),
    ("lower", Filter::Lower),
    ("trim", Filter::Trim),
];

/// Names from other template languages, and the filter that does the same here.
const FILTER_ALIASES: &[(&str, &str)] = &[
    ("base64", "b64encode"),
    ("b64", "b64encode"),
    ("base64encode", "b64encode"),
    ("b64enc", "b64encode"),
    ("json", "tojson"),
    ("to_json", "tojson"),
    ("toJson", "tojson"),
    ("upcase", "upper"),
    ("downcase", "lower"),
    ("strip", "trim"),
];

/// The supported tags.
pub(super) const TAGS: &[&str] = &["if", "elif", "else", "endif"];

/// Tags of other engines (or spellings) that mean one of ours.
const TAG_ALIASES: &[(&str, &str)] = &[("elsif", "elif"), ("elseif", "elif"), ("end", "endif")];

impl Filter {
    pub(super) fn name(self) -> &'static str {
        FILTERS.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// The variable called `name`.
pub(super) fn variable(name: &str) -> Option<Variable> {
    VARIABLES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The filter called `name`.
pub(super) fn filter(name: &str) -> Option<Filter> {
    FILTERS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// "; did you mean "accessToken"?" for an unknown variable, or the list of variables.
pub(super) fn variable_hint(name: &str) -> String {
    let names: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
    hint(name, &names, &[], "variables")
}

/// "; did you mean "b64encode"?" for an unknown filter, or the list of filters.
pub(super) fn filter_hint(name: &str) -> String {
    let names: Vec<&str> = FILTERS.iter().map(|(n, _)| *n).collect();
    hint(name, &names, FILTER_ALIASES, "filters")
}

/// "; did you mean "endif"?" for an unknown tag, or the list of tags.
pub(super) fn tag_hint(name: &str) -> String {
    hint(name, TAGS, TAG_ALIASES, "supported")
}

fn hint(name: &str, known: &[&str], aliases: &[(&str, &str)], list: &str) -> String {
    let alias = aliases.iter().find(|(a, _)| a.eq_ignore_ascii_case(name)).map(|(_, n)| *n);
    let close = || {
        let limit = 3.min(name.chars().count().div_ceil(2));
        known.iter().filter_map(|k| distance(name, k, limit).map(|d| (d, *k))).min_by_key(|(d, _)| *d).map(|(_, k)| k)
    };
    match alias.or_else(close) {
        Some(k) => format!("; did you mean \"{k}\"?"),
        None => format!("; {list}: {}", known.join(", ")),
    }
}

/// Edit distance of `a` and `b` ignoring ASCII case, when it is at most `limit`. Names longer
/// than any known one by more than `limit` are skipped without work, so the cost is bounded by
/// the known names' lengths.
fn distance(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().take(b.len() + limit + 1).map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    Some(row[b.len()]).filter(|d| *d <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_and_aliases_and_lists_the_rest() {
        assert_eq!(variable_hint("accesstoken"), "; did you mean \"accessToken\"?");
        assert_eq!(variable_hint("acessTokn"), "; did you mean \"accessToken\"?");
        assert_eq!(variable_hint("x"), format!("; variables: {}", VARIABLES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")));
        assert_eq!(filter_hint("base64"), "; did you mean \"b64encode\"?");
        assert_eq!(filter_hint("json"), "; did you mean \"tojson\"?");
        assert_eq!(filter_hint("tojsn"), "; did you mean \"tojson\"?");
        assert_eq!(filter_hint("sha256"), "; filters: b64encode, tojson, upper, lower, trim");
        assert_eq!(tag_hint("endfi"), "; did you mean \"endif\"?");
        assert_eq!(tag_hint("raw"), "; supported: if, elif, else, endif");
        assert_eq!(tag_hint("for"), "; supported: if, elif, else, endif");
    }

    #[test]
    fn distance_is_bounded_and_case_blind() {
        assert_eq!(distance("kitten", "sitting", 3), Some(3));
        assert_eq!(distance("NAME", "name", 3), Some(0));
        assert_eq!(distance("abc", "abcdefgh", 3), None);
        assert_eq!(distance(&"a".repeat(100_000), "name", 3), None);
    }
}
