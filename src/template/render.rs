//! Runs a program: one loop over its steps (jumps go only forward, so each runs at most once)
//! and a byte budget for everything filters and the output produce.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::names::{Filter, Variable};
use super::parser::{Atom, Expr, Op};
use super::{Context, MAX_OUTPUT_BYTES, MAX_VALUE_BYTES, MAX_WORK_BYTES, Problem};

/// A value while an expression is evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
}

impl<'a> Value<'a> {
    fn text(self) -> Cow<'a, str> {
        match self {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string().into(),
            Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Bool(b) => *b,
        }
    }
}

/// Bytes produced so far, against [`MAX_WORK_BYTES`].
struct Budget {
    used: usize,
}

impl Budget {
    /// Counts `bytes` more, or fails naming the limit and where it was reached.
    fn spend(&mut self, bytes: usize, at: usize) -> Result<(), Problem> {
        self.used = self.used.saturating_add(bytes);
        if self.used > MAX_WORK_BYTES {
            let what = format!("rendering takes more than {} MiB of filter results and output", MAX_WORK_BYTES / (1024 * 1024));
            return Err(Problem::at(at, what, "; use fewer filters"));
        }
        Ok(())
    }
}

/// Renders `ops` (parsed from `src`) with the values of `context`.
pub(super) fn render(src: &str, ops: &[Op], context: &Context<'_>) -> Result<String, Problem> {
    let mut out = String::new();
    let mut budget = Budget { used: 0 };
    let mut pc = 0;
    while let Some(op) = ops.get(pc) {
        pc += 1;
        let (piece, at) = match op {
            Op::Text { start, end } => (Cow::Borrowed(&src[*start..*end]), *start),
            Op::Emit(expr) => (eval(expr, context, &mut budget)?.text(), expr.at),
            Op::Unless { cond, to } => {
                if eval(&cond.expr, context, &mut budget)?.truthy() == cond.negate {
                    pc = *to;
                }
                continue;
            }
            Op::Jump(to) => {
                pc = *to;
                continue;
            }
        };
        if out.len() + piece.len() > MAX_OUTPUT_BYTES {
            return Err(Problem::at(at, format!("renders to more than {} KiB", MAX_OUTPUT_BYTES / 1024), ""));
        }
        budget.spend(piece.len(), at)?;
        out.push_str(&piece);
    }
    Ok(out)
}

fn eval<'a>(expr: &'a Expr, context: &'a Context<'a>, budget: &mut Budget) -> Result<Value<'a>, Problem> {
    let mut value = match &expr.atom {
        Atom::Var(variable) => variable_value(*variable, context),
        Atom::Str(s) => Value::Str(Cow::Borrowed(s)),
        Atom::Int(i) => Value::Int(*i),
        Atom::Bool(b) => Value::Bool(*b),
    };
    for &(filter, at) in &expr.filters {
        let size = output_size(filter, &value);
        if size > MAX_VALUE_BYTES {
            let what = format!("\"{}\" makes a value of more than {} KiB", filter.name(), MAX_VALUE_BYTES / 1024);
            return Err(Problem::at(at, what, ""));
        }
        budget.spend(size, at)?;
        value = apply(filter, value);
    }
    Ok(value)
}

fn variable_value<'a>(variable: Variable, context: &'a Context<'a>) -> Value<'a> {
    let vars = context.variables;
    let text = |s: &'a str| Value::Str(Cow::Borrowed(s));
    match variable {
        Variable::AccessToken => text(vars.access_token),
        Variable::IdToken => text(vars.id_token),
        Variable::TokenType => text("Bearer"),
        Variable::IssuedAt => text(&context.issued_at),
        Variable::IssuedAtUnix => Value::Int(vars.issued_at.as_second()),
        Variable::ExpiresAt => text(&context.expires_at),
        Variable::ExpiresAtUnix => Value::Int(vars.expires_at.as_second()),
        Variable::OrgId => text(vars.org_id),
        Variable::Scope => text(vars.scope),
        Variable::Name => text(vars.name),
        Variable::Namespace => text(vars.namespace),
    }
}

/// The length `filter` gives `value`, computed without building it.
fn output_size(filter: Filter, value: &Value<'_>) -> usize {
    let text_len = || match value {
        Value::Str(s) => s.len(),
        Value::Int(i) => i.to_string().len(),
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
    };
    match (filter, value) {
        (Filter::B64Encode, _) => text_len().div_ceil(3).saturating_mul(4),
        (Filter::ToJson, Value::Str(s)) => 2 + s.bytes().map(|b| json_escape(b).map_or(1, str::len)).sum::<usize>(),
        (Filter::ToJson, _) => text_len(),
        (Filter::Upper | Filter::Lower, Value::Str(s)) if s.is_ascii() => s.len(),
        (Filter::Upper, Value::Str(s)) => s.chars().flat_map(char::to_uppercase).map(char::len_utf8).sum(),
        (Filter::Lower, Value::Str(s)) => s.chars().flat_map(char::to_lowercase).map(char::len_utf8).sum(),
        (Filter::Trim, Value::Str(s)) => s.trim().len(),
        (Filter::Upper | Filter::Lower | Filter::Trim, _) => text_len(),
    }
}

fn apply<'a>(filter: Filter, value: Value<'a>) -> Value<'a> {
    match (filter, value) {
        (Filter::ToJson, Value::Str(s)) => Value::Str(json_string(&s).into()),
        (Filter::ToJson, other) => Value::Str(other.text()),
        (Filter::B64Encode, v) => Value::Str(STANDARD.encode(v.text().as_bytes()).into()),
        (Filter::Upper, v) => Value::Str(v.text().to_uppercase().into()),
        (Filter::Lower, v) => Value::Str(v.text().to_lowercase().into()),
        (Filter::Trim, Value::Str(Cow::Borrowed(s))) => Value::Str(Cow::Borrowed(s.trim())),
        (Filter::Trim, v) => Value::Str(v.text().trim().to_owned().into()),
    }
}

/// How JSON writes byte `b` of a string, when not as itself. Only ASCII needs escaping, so a
/// byte of a multi-byte character is always itself.
fn json_escape(b: u8) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b", "\\t", "\\n", "\\u000b", "\\f",
        "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018",
        "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match b {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        b if b < 0x20 => Some(CONTROL[usize::from(b)]),
        _ => None,
    }
}

/// `s` as a JSON string, quoted and escaped; runs that need no escape are copied at once.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut copied = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(escaped) = json_escape(b) {
            out.push_str(&s[copied..i]);
            out.push_str(escaped);
            copied = i + 1;
        }
    }
    out.push_str(&s[copied..]);
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_round_trip_and_sizes_are_exact() {
        let tricky = "a\"b\\c\n\t\u{1}\u{1f}\u{7f}é😀</script>";
        let json = json_string(tricky);
        assert_eq!(serde_json::from_str::<String>(&json).unwrap(), tricky);
        assert_eq!(json, serde_json::to_string(tricky).unwrap());
        for filter in [Filter::B64Encode, Filter::ToJson, Filter::Upper, Filter::Lower, Filter::Trim] {
            for value in [Value::Str(tricky.into()), Value::Str(" ßΐİſ ".into()), Value::Int(-12), Value::Bool(false)] {
                let size = output_size(filter, &value);
                assert_eq!(apply(filter, value.clone()).text().len(), size, "{filter:?} of {value:?}");
            }
        }
    }

    #[test]
    fn truthiness() {
        assert!(!Value::Str("".into()).truthy() && !Value::Int(0).truthy() && !Value::Bool(false).truthy());
        assert!(Value::Str("0".into()).truthy() && Value::Int(-1).truthy() && Value::Bool(true).truthy());
    }
}
