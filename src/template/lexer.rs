//! Splits a template into text and tags, and a tag into tokens. One pass over the bytes, no
//! backtracking: every byte is looked at a bounded number of times.
//!
//! Only `{{` and `{%` open a tag; everything else is text, including `}}`, `%}`, `{#` and `#}`.
//! A `{` right before an opener is text (`{{{ x }}}` is `{`, the value, `}`).

use super::Problem;

/// Which kind of tag: `{{ expression }}` or `{% block tag %}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Expr,
    Block,
}

impl Kind {
    pub(super) fn opener(self) -> &'static str {
        match self {
            Kind::Expr => "{{",
            Kind::Block => "{%",
        }
    }

    pub(super) fn closer(self) -> &'static str {
        match self {
            Kind::Expr => "}}",
            Kind::Block => "%}",
        }
    }
}

/// A token inside a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token<'s> {
    Ident(&'s str),
    Str(String),
    Int(i64),
    Pipe,
    /// `}}` or `%}`, `trim` for `-}}` / `-%}`.
    Close {
        kind: Kind,
        trim: bool,
    },
    /// A character no token starts with.
    Other(char),
    End,
}

impl Token<'_> {
    /// How an error message names the token. Never quotes a string literal's contents.
    pub(super) fn describe(&self) -> String {
        match self {
            Token::Ident(name) => quote(name),
            Token::Str(_) => "a string".into(),
            Token::Int(_) => "a number".into(),
            Token::Pipe => "\"|\"".into(),
            Token::Close { kind, trim: false } => quote(kind.closer()),
            Token::Close { kind, trim: true } => quote(&format!("-{}", kind.closer())),
            Token::Other(c) => format!("{:?}", c.to_string()),
            Token::End => "the end of the template".into(),
        }
    }
}

/// A name in quotes, cut at 40 characters so a message stays short whatever the input.
pub(super) fn quote(name: &str) -> String {
    match name.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}", format!("{}…", &name[..cut])),
        None => format!("{name:?}"),
    }
}

/// The position in a template while lexing it.
pub(super) struct Cursor<'s> {
    src: &'s str,
    pos: usize,
    /// The previous tag ended with `-}}` / `-%}`: the next text loses its leading white space.
    trim_next: bool,
}

/// A tag just opened: its kind and where its opener starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Open {
    pub(super) kind: Kind,
    pub(super) at: usize,
}

impl<'s> Cursor<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        Cursor { src, pos: 0, trim_next: false }
    }

    /// The text up to the next opener (as a byte range, trimmed as the markers say, possibly
    /// empty), and the tag that opener starts, with the cursor after it and its `-`.
    pub(super) fn text(&mut self) -> ((usize, usize), Option<Open>) {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        let mut open = None;
        let mut i = start;
        while let Some(offset) = bytes[i..].iter().position(|&b| b == b'{') {
            let j = i + offset;
            let opens = |k: usize| matches!(bytes.get(k + 1), Some(b'{' | b'%'));
            if opens(j) {
                // In a run of `{`, the last two (or the last `{%`) open the tag.
                let mut j = j;
                while bytes[j + 1] == b'{' && opens(j + 1) {
                    j += 1;
                }
                open = Some(j);
                break;
            }
            i = j + 1;
        }
        let end = open.unwrap_or(bytes.len());
        let mut text = &self.src[start..end];
        if std::mem::take(&mut self.trim_next) {
            text = text.trim_start();
        }
        let Some(at) = open else {
            self.pos = end;
            return ((end - text.len(), end), None);
        };
        let text_start = end - text.len();
        let trim_left = bytes.get(at + 2) == Some(&b'-');
        if trim_left {
            text = text.trim_end();
        }
        self.pos = at + 2 + usize::from(trim_left);
        let kind = if bytes[at + 1] == b'{' { Kind::Expr } else { Kind::Block };
        ((text_start, text_start + text.len()), Some(Open { kind, at }))
    }

    /// The next token of a tag and where it starts; after a closer, the cursor is back in text.
    pub(super) fn token(&mut self) -> Result<(usize, Token<'s>), Problem> {
        let bytes = self.src.as_bytes();
        while matches!(bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
        let at = self.pos;
        let rest = &bytes[at..];
        let (len, token) = match rest {
            [] => (0, Token::End),
            [b'|', ..] => (1, Token::Pipe),
            [b'}', b'}', ..] => (2, Token::Close { kind: Kind::Expr, trim: false }),
            [b'%', b'}', ..] => (2, Token::Close { kind: Kind::Block, trim: false }),
            [b'-', b'}', b'}', ..] => (3, Token::Close { kind: Kind::Expr, trim: true }),
            [b'-', b'%', b'}', ..] => (3, Token::Close { kind: Kind::Block, trim: true }),
            [b'-', b'0'..=b'9', ..] | [b'0'..=b'9', ..] => self.integer(at)?,
            [b'"' | b'\'', ..] => self.string(at)?,
            [b'a'..=b'z' | b'A'..=b'Z' | b'_', ..] => {
                let len = rest.iter().position(|b| !(b.is_ascii_alphanumeric() || *b == b'_')).unwrap_or(rest.len());
                (len, Token::Ident(&self.src[at..at + len]))
            }
            _ => {
                let c = self.src[at..].chars().next().unwrap_or('?');
                (c.len_utf8(), Token::Other(c))
            }
        };
        self.pos += len;
        if let Token::Close { trim, .. } = token {
            self.trim_next = trim;
        }
        Ok((at, token))
    }

    fn integer(&self, at: usize) -> Result<(usize, Token<'s>), Problem> {
        let bytes = &self.src.as_bytes()[at..];
        let negative = bytes[0] == b'-';
        let digits = bytes[usize::from(negative)..].iter().take_while(|b| b.is_ascii_digit()).count();
        let len = usize::from(negative) + digits;
        let value = self.src[at..at + len].parse::<i64>().map_err(|_| Problem::at(at, "number out of range", ""))?;
        Ok((len, Token::Int(value)))
    }

    /// A quoted string with the escapes `\"`, `\'`, `\\`, `\n` and `\t`.
    fn string(&self, at: usize) -> Result<(usize, Token<'s>), Problem> {
        let quote = self.src.as_bytes()[at] as char;
        let mut value = String::new();
        let mut chars = self.src[at + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => return Ok((i + 2, Token::Str(value))),
                '\\' => {
                    let escaped = match chars.next() {
                        Some((_, '"')) => '"',
                        Some((_, '\'')) => '\'',
                        Some((_, '\\')) => '\\',
                        Some((_, 'n')) => '\n',
                        Some((_, 't')) => '\t',
                        Some((_, other)) => {
                            let hint = "; a string knows \\\" \\' \\\\ \\n \\t";
                            let what = format!("unknown escape {:?} in a string", format!("\\{other}"));
                            return Err(Problem::at(at + 1 + i, what, hint));
                        }
                        None => break,
                    };
                    value.push(escaped);
                }
                c => value.push(c),
            }
        }
        Err(Problem::at(at, "unterminated string", &format!("; close it with {quote}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<(&str, Option<Kind>)> {
        let mut cursor = Cursor::new(src);
        let mut out = Vec::new();
        loop {
            let ((start, end), open) = cursor.text();
            out.push((&src[start..end], open.map(|o| o.kind)));
            let Some(_) = open else { return out };
            while !matches!(cursor.token().unwrap().1, Token::Close { .. } | Token::End) {}
        }
    }

    #[test]
    fn only_openers_start_tags() {
        assert_eq!(texts("a }} %} #} {# }}} b"), [("a }} %} #} {# }}} b", None)]);
        assert_eq!(texts("x{{ a }}}"), [("x", Some(Kind::Expr)), ("}", None)]);
        assert_eq!(texts("{{{ a }}}"), [("{", Some(Kind::Expr)), ("}", None)]);
        assert_eq!(texts("{{{% if a %}"), [("{{", Some(Kind::Block)), ("", None)]);
        assert_eq!(texts("${#TOKEN} {"), [("${#TOKEN} {", None)]);
    }

    #[test]
    fn trim_markers_strip_adjacent_white_space() {
        assert_eq!(texts("a \n {{- x -}} \n b"), [("a", Some(Kind::Expr)), ("b", None)]);
        assert_eq!(texts("a {%- if x -%}\n b {% endif %} c"), [("a", Some(Kind::Block)), ("b ", Some(Kind::Block)), (" c", None)]);
    }

    #[test]
    fn tokens() {
        let mut cursor = Cursor::new(r#"{{ a_1 | "q\"\n" 'x' -12 7 ( -}}"#);
        cursor.text();
        let tokens: Vec<Token> = std::iter::from_fn(|| Some(cursor.token().unwrap().1)).take(9).collect();
        assert_eq!(
            tokens,
            [
                Token::Ident("a_1"),
                Token::Pipe,
                Token::Str("q\"\n".into()),
                Token::Str("x".into()),
                Token::Int(-12),
                Token::Int(7),
                Token::Other('('),
                Token::Close { kind: Kind::Expr, trim: true },
                Token::End,
            ]
        );
        let mut cursor = Cursor::new("{{ 99999999999999999999 }}");
        cursor.text();
        assert!(cursor.token().is_err());
        let mut cursor = Cursor::new(r#"{{ "a\q" }}"#);
        cursor.text();
        assert!(cursor.token().is_err());
    }
}
