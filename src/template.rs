//! Secret templates: keys rendered from user-written templates (`spec.target.template.data`).
//!
//! Rendered with `upon`: Jinja-like syntax (`{{ accessToken | b64encode }}`, `{% if %}`,
//! `{% for %}`), but no arithmetic, no string building, no file or network access, and only
//! the filters registered here. A template can therefore neither loop nor allocate beyond what
//! its own text and the variables give it: time is linear in its size, and the output of each
//! key is cut off at [`MAX_OUTPUT_BYTES`]. No Kubernetes types here.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;

/// The longest rendered value of one key.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Deepest nesting of parentheses, and of `{% if %}` / `{% for %}` / `{% with %}` blocks. The
/// engine parses and renders both recursively: a few thousand levels overflow the stack, which
/// aborts the whole operator (found by fuzzing), and in a debug build a few dozen levels already
/// exhaust a 2 MiB thread stack. Real Secret templates nest a level or two.
pub const MAX_NESTING: usize = 8;

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

impl Variables<'_> {
    fn to_value(&self) -> upon::Value {
        let time = |t: Timestamp| upon::Value::String(t.round(jiff::Unit::Second).unwrap_or(t).to_string());
        let text = |s: &str| upon::Value::String(s.to_owned());
        let map: BTreeMap<String, upon::Value> = [
            ("accessToken", text(self.access_token)),
            ("idToken", text(self.id_token)),
            ("tokenType", text("Bearer")),
            ("issuedAt", time(self.issued_at)),
            ("issuedAtUnix", upon::Value::Integer(self.issued_at.as_second())),
            ("expiresAt", time(self.expires_at)),
            ("expiresAtUnix", upon::Value::Integer(self.expires_at.as_second())),
            ("orgId", text(self.org_id)),
            ("scope", text(self.scope)),
            ("name", text(self.name)),
            ("namespace", text(self.namespace)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        upon::Value::Map(map)
    }
}

/// A template that does not compile or render: which key, where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.target.template.data[{key}]: {problem}")]
pub struct TemplateError {
    /// The data key whose template failed.
    pub key: String,
    /// What is wrong, with the line and column when known. Never a token value.
    pub problem: String,
}

/// Renders every template with `variables`. Errors never quote a token: values are not part
/// of the messages, and any that slip in are redacted.
pub fn render_all(templates: &BTreeMap<String, String>, variables: &Variables<'_>) -> Result<BTreeMap<String, String>, TemplateError> {
    let engine = engine();
    let context = variables.to_value();
    templates
        .iter()
        .map(|(key, source)| {
            let fail = |problem: String| TemplateError { key: key.clone(), problem: redact(&problem, variables) };
            check_nesting(source).map_err(fail)?;
            let template = engine.compile(source.as_str()).map_err(|e| fail(describe(&e)))?;
            let mut out = CappedWriter::default();
            let rendered = template.render_from(&engine, &context).to_writer(&mut out);
            if out.overflowed {
                return Err(fail(format!("renders to more than {} KiB", MAX_OUTPUT_BYTES / 1024)));
            }
            rendered.map_err(|e| fail(describe(&e)))?;
            let text = String::from_utf8(out.bytes).map_err(|_| fail("renders to text that is not UTF-8".into()))?;
            Ok((key.clone(), text))
        })
        .collect()
}

/// Checks templates before a token is requested, with placeholder values in place of the token.
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

/// Rejects nesting deeper than [`MAX_NESTING`], before the engine's recursive parser sees it.
fn check_nesting(source: &str) -> Result<(), String> {
    let too_deep = |what: &str| format!("{what} nested more than {MAX_NESTING} deep");
    let mut parens = 0usize;
    for c in source.chars() {
        match c {
            '(' => parens += 1,
            ')' => parens = parens.saturating_sub(1),
            _ => {}
        }
        if parens > MAX_NESTING {
            return Err(too_deep("parentheses"));
        }
    }
    let mut blocks = 0usize;
    for tag in source.split("{%").skip(1) {
        let keyword = tag.trim_start_matches(['-', ' ', '\t', '\n', '\r']);
        if ["if", "for", "with"]
            .iter()
            .any(|k| keyword.starts_with(k) && !keyword[k.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        {
            blocks += 1;
        } else if keyword.starts_with("end") {
            blocks = blocks.saturating_sub(1);
        }
        if blocks > MAX_NESTING {
            return Err(too_deep("blocks"));
        }
    }
    Ok(())
}

fn engine() -> upon::Engine<'static> {
    let mut engine = upon::Engine::new();
    // No template can include another: each key is compiled on its own.
    engine.set_max_include_depth(0);
    engine.add_function("b64encode", |s: String| STANDARD.encode(s));
    engine.add_function("tojson", |v: upon::Value| to_json(&v).to_string());
    engine.add_function("upper", |s: String| s.to_uppercase());
    engine.add_function("lower", |s: String| s.to_lowercase());
    engine.add_function("trim", |s: String| s.trim().to_owned());
    engine
}

fn to_json(value: &upon::Value) -> serde_json::Value {
    match value {
        upon::Value::None => serde_json::Value::Null,
        upon::Value::Bool(b) => (*b).into(),
        upon::Value::Integer(i) => (*i).into(),
        upon::Value::Float(f) => (*f).into(),
        upon::Value::String(s) => s.as_str().into(),
        upon::Value::List(items) => items.iter().map(to_json).collect(),
        upon::Value::Map(map) => map.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
    }
}

/// "invalid syntax at line 1, column 4: expected …" from upon's multi-line report.
fn describe(error: &upon::Error) -> String {
    let pretty = format!("{error:#}");
    let position = pretty
        .split("--> ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|location| {
            let mut parts = location.rsplitn(3, ':');
            let (col, line) = (parts.next()?, parts.next()?);
            Some(format!(" at line {line}, column {col}"))
        })
        .unwrap_or_default();
    let plain = error.to_string();
    let (kind, reason) = plain.split_once(": ").unwrap_or((plain.as_str(), ""));
    if reason.is_empty() { format!("{kind}{position}") } else { format!("{kind}{position}: {reason}") }
}

fn redact(text: &str, variables: &Variables<'_>) -> String {
    [variables.access_token, variables.id_token]
        .iter()
        .filter(|v| !v.is_empty())
        .fold(text.to_owned(), |out, value| out.replace(value, "<redacted>"))
}

/// Collects output up to [`MAX_OUTPUT_BYTES`] and then fails the render.
#[derive(Default)]
struct CappedWriter {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("template output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables() -> Variables<'static> {
        Variables {
            access_token: "eyJ.SECRET-ACCESS.sig",
            id_token: "",
            issued_at: "2026-11-29T10:00:00Z".parse().unwrap(),
            expires_at: "2026-11-29T10:30:00Z".parse().unwrap(),
            org_id: "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4",
            scope: "",
            name: "partner-api",
            namespace: "team-a",
        }
    }

    fn one(key: &str, source: &str) -> BTreeMap<String, String> {
        [(key.to_owned(), source.to_owned())].into()
    }

    #[test]
    fn renders_every_documented_variable() {
        let source = "{{ tokenType }} {{ accessToken }}|{{ idToken }}|{{ issuedAt }}|{{ issuedAtUnix }}|{{ expiresAt }}|\
                      {{ expiresAtUnix }}|{{ orgId }}|{{ scope }}|{{ namespace }}/{{ name }}";
        let out = render_all(&one("all", source), &variables()).unwrap();
        assert_eq!(
            out["all"],
            "Bearer eyJ.SECRET-ACCESS.sig||2026-11-29T10:00:00Z|1795946400|2026-11-29T10:30:00Z|1795948200|\
             6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4||team-a/partner-api"
        );
    }

    #[test]
    fn filters_quote_json_and_encode_base64() {
        let json =
            render_all(&one("c", r#"{"token": {{ accessToken | tojson }}, "exp": {{ expiresAtUnix | tojson }} }"#), &variables()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json["c"]).unwrap();
        assert_eq!(parsed["token"], "eyJ.SECRET-ACCESS.sig");
        assert_eq!(parsed["exp"], 1_795_948_200);
        let b64 = render_all(&one("a", "{{ accessToken | b64encode }}"), &variables()).unwrap();
        assert_eq!(STANDARD.decode(&b64["a"]).unwrap(), b"eyJ.SECRET-ACCESS.sig");
    }

    #[test]
    fn a_bad_template_names_its_key_and_position_and_never_the_token() {
        let err = render_all(&one("header", "Bearer {{ accessToken"), &variables()).unwrap_err();
        assert_eq!(err.key, "header");
        assert!(err.to_string().starts_with("spec.target.template.data[header]: invalid syntax at line 1, column"), "{err}");
        let err = render_all(&one("cfg", "line one\n{{ acessToken }}"), &variables()).unwrap_err();
        assert!(err.problem.contains("line 2, column 4"), "{err}");
        let err = render_all(&one("f", "{{ accessToken | no_such_filter }}"), &variables()).unwrap_err();
        assert!(!err.to_string().contains("SECRET-ACCESS"), "{err}");
        assert!(check(&one("cfg", "{{ acessToken }}"), "org", "n", "ns").is_err(), "undefined names fail the check");
        assert!(check(&one("ok", "{{ accessToken }}"), "org", "n", "ns").is_ok());
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        let parens = format!("{{{{ {}accessToken{} }}}}", "(".repeat(5_000), ")".repeat(5_000));
        let err = render_all(&one("p", &parens), &variables()).unwrap_err();
        assert!(err.problem.contains("parentheses nested more than 8 deep"), "{err}");
        let blocks = format!("{}x{}", "{% if accessToken %}".repeat(5_000), "{% endif %}".repeat(5_000));
        let err = render_all(&one("b", &blocks), &variables()).unwrap_err();
        assert!(err.problem.contains("blocks nested more than 8 deep"), "{err}");
        let fine = format!("{}{{{{ accessToken }}}}{}", "{% if accessToken %}".repeat(8), "{% endif %}".repeat(8));
        assert_eq!(render_all(&one("f", &fine), &variables()).unwrap()["f"], "eyJ.SECRET-ACCESS.sig");
    }

    #[test]
    fn output_is_bounded() {
        let source = "{{ accessToken }}".repeat(5_000);
        let err = render_all(&one("big", &source), &variables()).unwrap_err();
        assert!(err.problem.contains("more than 64 KiB"), "{err}");
        let include = render_all(&one("i", r#"{% include "x" %}"#), &variables()).unwrap_err();
        assert_eq!(include.key, "i");
    }
}
