//! Turns a template into a flat program of text, values and forward jumps. A loop over the
//! lexer's segments with an explicit stack of open `if` blocks (at most [`MAX_NESTING`]): no
//! recursion on the input, so no input can exhaust the stack.

use super::lexer::{Cursor, Kind, Open, Token, quote};
use super::names::{self, Filter, Variable};
use super::{MAX_FILTERS, MAX_NESTING, Problem};

/// One step of a program. Jumps only go forward, so each step runs at most once.
#[derive(Debug)]
pub(super) enum Op {
    /// Text of the template, as a byte range.
    Text { start: usize, end: usize },
    /// `{{ expression }}`.
    Emit(Expr),
    /// `{% if %}` / `{% elif %}`: continue when the condition holds, else go to `to`.
    Unless { cond: Cond, to: usize },
    /// The end of a taken branch: go to the `endif`.
    Jump(usize),
}

/// A value and the filters it goes through.
#[derive(Debug)]
pub(super) struct Expr {
    pub(super) atom: Atom,
    /// Where the value starts.
    pub(super) at: usize,
    /// Each filter with the position of its name.
    pub(super) filters: Vec<(Filter, usize)>,
}

#[derive(Debug)]
pub(super) enum Atom {
    Var(Variable),
    Str(String),
    Int(i64),
    Bool(bool),
}

/// `[not] expression`.
#[derive(Debug)]
pub(super) struct Cond {
    pub(super) negate: bool,
    pub(super) expr: Expr,
}

/// An open `if`: where it starts, the jump to patch when the next branch starts, and the jumps
/// from the ends of taken branches to the `endif`.
struct Block {
    at: usize,
    pending: Option<usize>,
    ends: Vec<usize>,
    else_at: Option<usize>,
}

/// The program of `src`, or the first problem in it.
pub(super) fn parse(src: &str) -> Result<Vec<Op>, Problem> {
    let mut cursor = Cursor::new(src);
    let mut ops = Vec::new();
    let mut open: Vec<Block> = Vec::new();
    loop {
        let ((start, end), tag) = cursor.text();
        if start < end {
            ops.push(Op::Text { start, end });
        }
        let Some(tag) = tag else { break };
        let mut tokens = Tokens { cursor: &mut cursor, tag };
        if tag.kind == Kind::Expr {
            let (at, first) = tokens.next()?;
            let (expr, last) = tokens.expr(at, first)?;
            tokens.close(last)?;
            ops.push(Op::Emit(expr));
            continue;
        }
        let (at, name) = match tokens.next()? {
            (at, Token::Ident(name)) => (at, name),
            (at, other) => {
                return Err(Problem::at(
                    at,
                    format!("expected a tag name, found {}", other.describe()),
                    "; supported: if, elif, else, endif",
                ));
            }
        };
        match name {
            "if" | "elif" => {
                let (at_cond, first) = tokens.next()?;
                let (cond, last) = tokens.cond(name, at_cond, first)?;
                tokens.close(last)?;
                let to = ops.len() + usize::from(name == "elif");
                if name == "if" {
                    if open.len() == MAX_NESTING {
                        return Err(Problem::at(at, format!("blocks nested more than {MAX_NESTING} deep"), ""));
                    }
                    open.push(Block { at, pending: Some(to), ends: Vec::new(), else_at: None });
                } else {
                    let block = innermost(&mut open, name, at)?;
                    if let Some(else_at) = block.else_at {
                        return Err(Problem::at(
                            at,
                            "\"elif\" after \"else\"",
                            &format!("; the \"else\" is at {}", position(src, else_at)),
                        ));
                    }
                    ops.push(Op::Jump(0));
                    block.ends.push(ops.len() - 1);
                    patch(&mut ops, block.pending.replace(to), to);
                }
                ops.push(Op::Unless { cond, to: 0 });
            }
            "else" => {
                tokens.bare("else")?;
                let block = innermost(&mut open, name, at)?;
                if let Some(else_at) = block.else_at {
                    return Err(Problem::at(at, "second \"else\"", &format!("; the first is at {}", position(src, else_at))));
                }
                ops.push(Op::Jump(0));
                block.ends.push(ops.len() - 1);
                block.else_at = Some(at);
                let here = ops.len();
                patch(&mut ops, block.pending.take(), here);
            }
            "endif" => {
                tokens.bare("endif")?;
                innermost(&mut open, name, at)?;
                let block = open.pop().expect("innermost found it");
                let here = ops.len();
                patch(&mut ops, block.pending, here);
                for jump in block.ends {
                    patch(&mut ops, Some(jump), here);
                }
            }
            other => return Err(Problem::at(at, format!("unknown tag {}", quote(other)), &names::tag_hint(other))),
        }
    }
    match open.last() {
        Some(block) => Err(Problem::at(block.at, "\"if\" without \"{% endif %}\"", "")),
        None => Ok(ops),
    }
}

/// "line 3, column 7" of byte `at`.
pub(super) fn position(src: &str, at: usize) -> String {
    let before = &src[..at.min(src.len())];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

fn innermost<'b>(open: &'b mut [Block], name: &str, at: usize) -> Result<&'b mut Block, Problem> {
    open.last_mut().ok_or_else(|| Problem::at(at, format!("\"{name}\" without an open \"if\""), ""))
}

/// Points the jump at `index` (if any) to `to`.
fn patch(ops: &mut [Op], index: Option<usize>, to: usize) {
    if let Some(Op::Unless { to: target, .. } | Op::Jump(target)) = index.and_then(|i| ops.get_mut(i)) {
        *target = to;
    }
}

/// The tokens of one tag.
struct Tokens<'c, 's> {
    cursor: &'c mut Cursor<'s>,
    tag: Open,
}

impl<'s> Tokens<'_, 's> {
    fn next(&mut self) -> Result<(usize, Token<'s>), Problem> {
        match self.cursor.token()? {
            (_, Token::End) => {
                let (open, close) = (self.tag.kind.opener(), self.tag.kind.closer());
                Err(Problem::at(self.tag.at, format!("unclosed \"{open}\""), &format!("; close it with \"{close}\"")))
            }
            token => Ok(token),
        }
    }

    /// The tag's closer must follow.
    fn close(&mut self, (at, token): (usize, Token<'s>)) -> Result<(), Problem> {
        match token {
            Token::Close { kind, .. } if kind == self.tag.kind => Ok(()),
            other => {
                let expected = if self.tag.kind == Kind::Expr { "\"|\" or \"}}\"" } else { "\"|\" or \"%}\"" };
                Err(Problem::at(at, format!("unexpected {}", other.describe()), &format!("; expected {expected}")))
            }
        }
    }

    /// `else` and `endif` take nothing.
    fn bare(&mut self, name: &str) -> Result<(), Problem> {
        match self.next()? {
            (_, Token::Close { kind: Kind::Block, .. }) => Ok(()),
            (at, Token::Ident("if")) if name == "else" => {
                Err(Problem::at(at, "unexpected \"if\" after \"else\"", "; write \"{% elif condition %}\""))
            }
            (at, other) => Err(Problem::at(at, format!("unexpected {} after \"{name}\"", other.describe()), "; expected \"%}\"")),
        }
    }

    /// `[not] expression` after `if` / `elif`, and the token after it.
    fn cond(&mut self, tag: &str, at: usize, first: Token<'s>) -> Result<(Cond, (usize, Token<'s>)), Problem> {
        let (negate, at, first) = match first {
            Token::Ident("not") => {
                let (at, token) = self.next()?;
                (true, at, token)
            }
            Token::Close { .. } => return Err(Problem::at(at, format!("\"{tag}\" needs a condition"), "")),
            token => (false, at, token),
        };
        let (expr, last) = self.expr(at, first)?;
        Ok((Cond { negate, expr }, last))
    }

    /// `atom | filter | …` starting with `first` (at `at`), and the token after it.
    fn expr(&mut self, at: usize, first: Token<'s>) -> Result<(Expr, (usize, Token<'s>)), Problem> {
        let atom = match first {
            Token::Ident("true") => Atom::Bool(true),
            Token::Ident("false") => Atom::Bool(false),
            Token::Ident(name) => Atom::Var(
                names::variable(name)
                    .ok_or_else(|| Problem::at(at, format!("unknown variable {}", quote(name)), &names::variable_hint(name)))?,
            ),
            Token::Str(s) => Atom::Str(s),
            Token::Int(i) => Atom::Int(i),
            other => {
                let found = match other {
                    Token::Close { .. } => "nothing".to_owned(),
                    other => other.describe(),
                };
                let what = format!("expected a variable, a string, a number, true or false, found {found}");
                return Err(Problem::at(at, what, ""));
            }
        };
        let mut expr = Expr { atom, at, filters: Vec::new() };
        loop {
            let (at, token) = self.next()?;
            if token != Token::Pipe {
                return Ok((expr, (at, token)));
            }
            let (at, name) = match self.next()? {
                (at, Token::Ident(name)) => (at, name),
                (at, other) => {
                    let what = format!("expected a filter name after \"|\", found {}", other.describe());
                    return Err(Problem::at(at, what, "; filters: b64encode, tojson, upper, lower, trim"));
                }
            };
            let filter =
                names::filter(name).ok_or_else(|| Problem::at(at, format!("unknown filter {}", quote(name)), &names::filter_hint(name)))?;
            if expr.filters.len() == MAX_FILTERS {
                return Err(Problem::at(at, format!("more than {MAX_FILTERS} filters in one expression"), ""));
            }
            expr.filters.push((filter, at));
        }
    }
}
