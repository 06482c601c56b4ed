//! Secret templates: keys rendered from user-written templates (`spec.target.template.data`).
//!
//! Our own small engine, Jinja-like: text, `{{ value | filter }}`, `{% if %}` / `{% elif %}` /
//! `{% else %}` / `{% endif %}`, `{{-` / `-}}` trim markers. Only `{{` and `{%` open a tag, so
//! `}}}`, `%}`, `{#` and `#}` in text are text (minified JSON, `${#TOKEN}`, `printf '%}'`).
//!
//! A template is hostile input: anyone who can create a NavigatorToken writes one, and the
//! operator renders it for every tenant in one process. So the lexer, the parser ([`parser`]) and
//! the renderer ([`render`]) are loops with an explicit, bounded stack, never recursion on the
//! input (the `upon` crate used before overflowed the stack on 3,000 nested `[`, which aborted
//! the operator at every restart), and everything is bounded by construction: blocks nest at most
//! [`MAX_NESTING`] deep, an expression has at most [`MAX_FILTERS`] filters, a value at most
//! [`MAX_VALUE_BYTES`], a key's output at most [`MAX_OUTPUT_BYTES`], and all bytes filters and
//! output produce for a key at most [`MAX_WORK_BYTES`]. Time is linear in the template's size
//! plus that budget. No file, network or environment access, no loops. No Kubernetes types here.

mod lexer;
mod names;
mod parser;
mod render;

use std::collections::BTreeMap;

use jiff::Timestamp;

/// The longest rendered value of one key.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// The longest value a filter may produce.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The bytes that filters and the output may produce, together, for one key.
pub const MAX_WORK_BYTES: usize = 1024 * 1024;
/// Deepest nesting of `{% if %}` blocks, kept on an explicit stack. Real Secret templates nest
/// a level or two.
pub const MAX_NESTING: usize = 8;
/// Most filters in one expression.
pub const MAX_FILTERS: usize = 16;

/// Everything a template can use (`{{ accessToken }}` …). The names are the documented ones.
#[derive(Clone, Debug)]
pub struct Variables<'a> {
    /// The access token.
    pub access_token: &'a str,
    /// The id token, or "".
    pub id_token: &'a str,
    /// When the token was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The organization.
    pub org_id: &'a str,
    /// The requested scope, or "".
    pub scope: &'a str,
    /// The NavigatorToken's name.
    pub name: &'a str,
    /// The NavigatorToken's namespace.
    pub namespace: &'a str,
}

/// The variables with the times formatted once for all keys.
struct Context<'a> {
    variables: &'a Variables<'a>,
    issued_at: String,
    expires_at: String,
}

impl<'a> Context<'a> {
    fn new(variables: &'a Variables<'a>) -> Self {
        let time = |t: Timestamp| t.round(jiff::Unit::Second).unwrap_or(t).to_string();
        Context { variables, issued_at: time(variables.issued_at), expires_at: time(variables.expires_at) }
    }
}

/// A template that does not parse or render: which key, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.target.template.data[{key}]: {problem}")]
pub struct TemplateError {
    /// The data key whose template failed.
    pub key: String,
    /// What is wrong, with the line and column when known. Never a token value.
    pub problem: String,
}

/// What is wrong, where (a byte offset into the template), and a hint to append.
#[derive(Debug)]
struct Problem {
    at: usize,
    what: String,
    hint: String,
}

impl Problem {
    fn at(at: usize, what: impl Into<String>, hint: &str) -> Self {
        Problem { at, what: what.into(), hint: hint.to_owned() }
    }

    /// "unknown variable "x" at line 1, column 4; variables: …".
    fn describe(&self, src: &str) -> String {
        format!("{} at {}{}", self.what, parser::position(src, self.at), self.hint)
    }
}

/// Renders every template with `variables`. Errors never quote a token: values are not part
/// of the messages, and any that slip in are redacted.
pub fn render_all(templates: &BTreeMap<String, String>, variables: &Variables<'_>) -> Result<BTreeMap<String, String>, TemplateError> {
    let context = Context::new(variables);
    templates
        .iter()
        .map(|(key, source)| {
            let fail = |problem: Problem| TemplateError { key: key.clone(), problem: redact(&problem.describe(source), variables) };
            let program = parser::parse(source).map_err(fail)?;
            let text = render::render(source, &program, &context).map_err(fail)?;
            Ok((key.clone(), text))
        })
        .collect()
}

/// Checks templates before a token is requested, with placeholder values in place of the token.
/// Names are checked when parsing, so an unknown variable or filter fails even in a branch the
/// placeholders do not take.
pub fn check(templates: &BTreeMap<String, String>, org_id: &str, name: &str, namespace: &str) -> Result<(), TemplateError> {
    let at = Timestamp::UNIX_EPOCH;
    let placeholders = Variables {
        access_token: "access-token",
        id_token: "id-token",
        issued_at: at,
        expires_at: at,
        org_id,
        scope: "scope",
        name,
        namespace,
    };
    render_all(templates, &placeholders).map(drop)
}

fn redact(text: &str, variables: &Variables<'_>) -> String {
    [variables.access_token, variables.id_token]
        .iter()
        .filter(|v| !v.is_empty())
        .fold(text.to_owned(), |out, value| out.replace(value, "<redacted>"))
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
