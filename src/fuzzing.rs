//! Checks run on untrusted input by the fuzz targets (fuzz/) and by the corpus regression test
//! (tests/fuzz_corpus.rs). Not part of the operator's API.
//!
//! Each check takes raw fuzzer bytes, feeds them to one parser and panics when an invariant breaks.
//! Where the input may carry a credential, the bytes `$S` (and `$B`) are replaced by a secret
//! marker (and the Basic credential built from it) before parsing, and no output may show it.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde_json::Value;

use crate::redact::Sensitive;
use crate::token::client::{self, MAX_DETAIL_CHARS, MAX_PLAUSIBLE_LIFETIME, MAX_RETRY_AFTER};
use crate::token::{EndpointType, ExpirySource, Grant, TokenClient, TokenError, TokenRequest, jwt};

/// The secret planted wherever the input says `$S`.
pub const SECRET_MARKER: &str = "SECRET-MARKER-5f1e2d9c";
/// Longest error message accepted where the input cannot make it longer by design.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Hosts on the allow-list of [`endpoint_url`].
pub const ALLOWED_HOSTS: &[&str] = &["console.navigator.vmware.com", "console.cloud.vmware.com", "localhost", "127.0.0.1", "[::1]"];

/// A check: panics when the input breaks an invariant.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name (also the corpus directory names).
pub const TARGETS: &[(&str, Check)] = &[
    ("token_response", token_response),
    ("jwt", jwt_exp),
    ("error_body", error_body),
    ("duration", duration),
    ("endpoint_url", endpoint_url),
    ("ca_bundle", ca_bundle),
    ("template", template),
];

/// `data` with every `$S` replaced by `secret` and every `$B` by `basic`.
fn plant(data: &[u8], secret: &str, basic: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        match data[i..] {
            [b'$', b'S', ..] => out.extend_from_slice(secret.as_bytes()),
            [b'$', b'B', ..] => out.extend_from_slice(basic.as_bytes()),
            _ => {
                out.push(data[i]);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

/// Panics when `output` shows six or more consecutive characters of `secret` that `reference`
/// (the unplanted input, or the output for it) does not show too.
fn assert_hidden(secret: &str, reference: &str, output: &str) {
    for piece in secret.as_bytes().windows(6) {
        let piece = std::str::from_utf8(piece).expect("secrets here are ASCII");
        assert!(!output.contains(piece) || reference.contains(piece), "output shows {piece:?} of a secret: {output:?}");
    }
}

/// What an error shows: its message and its Debug form.
fn shown(error: &TokenError) -> String {
    format!("{error} {error:?}")
}

/// The 200 body of either endpoint. First byte: endpoint type and requested validity; then the body.
pub fn token_response(data: &[u8]) {
    let Some((&selector, raw)) = data.split_first() else { return };
    let endpoint = if selector & 1 == 0 { EndpointType::Navigator } else { EndpointType::Csp };
    let validity = match (selector >> 1) & 7 {
        0 => None,
        1 => Some(Duration::from_secs(1)),
        2 => Some(Duration::from_secs(3600)),
        3 => Some(Duration::from_millis(500)),
        4 => Some(Duration::ZERO),
        5 => Some(Duration::from_secs(400 * 86400)),
        6 => Some(Duration::from_secs(400 * 86400 + 1)),
        _ => Some(Duration::MAX),
    };
    let body = plant(raw, SECRET_MARKER, "");
    let raw = &*String::from_utf8_lossy(raw);
    let issued_at = Timestamp::now();
    match client::parse_token(endpoint, &body, issued_at, validity) {
        Ok(token) => {
            assert_eq!(token.issued_at, issued_at);
            assert!(token.expires_at > issued_at, "expires {} before issue {issued_at}", token.expires_at);
            assert!(token.expires_at.duration_since(issued_at) <= MAX_PLAUSIBLE_LIFETIME, "implausible {}", token.expires_at);
            assert!(!token.access_token.expose().trim().is_empty());
            if token.expiry_source == ExpirySource::RequestedValidity {
                assert!(validity.is_some());
            }
            assert_hidden(SECRET_MARKER, raw, &format!("{token:?}"));
        }
        Err(error) => {
            let shown = shown(&error);
            assert!(shown.len() <= MAX_MESSAGE_BYTES, "message of {} bytes", shown.len());
            assert_hidden(SECRET_MARKER, raw, &shown);
        }
    }
}

/// JWT claims and `exp`. First byte even: the rest is the token; odd: the rest is the payload.
pub fn jwt_exp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        format!("eyJhbGciOiJub25lIn0.{}.c2ln", URL_SAFE_NO_PAD.encode(rest))
    };
    let claims = jwt::claims(&token);
    let exp = claims.as_ref().and_then(|c| c.get("exp")).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
    assert_eq!(jwt::expiry(&token), exp);
    if mode & 1 == 1 {
        let direct = match serde_json::from_slice::<Value>(rest) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        assert_eq!(claims, direct, "the payload decodes differently inside a JWT");
    }
}

/// CSP error bodies, `Location` and `Retry-After`. First byte: which (mod 3); then the value.
/// A secret must not show more than where the input held `<redacted>` in its place shows.
pub fn error_body(data: &[u8]) {
    let Some((&mode, raw)) = data.split_first() else { return };
    let basic = STANDARD.encode(format!("client-id:{SECRET_MARKER}"));
    let scrub = [SECRET_MARKER, basic.as_str()];
    let outputs = |secret: &str, basic: &str| -> String {
        let body = plant(raw, secret, basic);
        let error = if mode % 3 == 0 {
            let detail = client::parse_detail(&body, &scrub);
            for field in [&detail.csp_error_code, &detail.message, &detail.request_id].into_iter().flatten() {
                assert!(!field.is_empty() && field.chars().count() <= MAX_DETAIL_CHARS, "field {field:?}");
                assert!(!field.chars().any(char::is_control), "control character in {field:?}");
            }
            TokenError::RateLimited { retry_after: Some(MAX_RETRY_AFTER), detail }
        } else {
            let location = client::sanitize(&String::from_utf8_lossy(&body), &scrub);
            assert!(location.chars().count() <= MAX_DETAIL_CHARS && !location.chars().any(char::is_control), "{location:?}");
            TokenError::Redirected { status: 302, location }
        };
        let shown = shown(&error);
        assert!(shown.len() <= 4 * MAX_MESSAGE_BYTES, "message of {} bytes", shown.len());
        shown
    };
    if mode % 3 == 2 {
        let value = String::from_utf8_lossy(raw);
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().expect("valid timestamp");
        let delay = client::parse_retry_after(&value, now);
        assert!(delay.is_none_or(|d| d <= MAX_RETRY_AFTER), "{delay:?}");
        if let Ok(seconds) = value.trim().parse::<u64>() {
            assert_eq!(delay, Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER)));
        }
        return;
    }
    let shown = outputs(SECRET_MARKER, &basic);
    let reference = outputs("<redacted>", "<redacted>");
    assert_hidden(SECRET_MARKER, &reference, &shown);
    assert_hidden(&basic, &reference, &shown);
}

/// True when `s` matches [`crate::duration::GO_DURATION_PATTERN`] (hand-written, no regex crate).
pub fn matches_go_duration(s: &str) -> bool {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let mut rest = s;
    while !rest.is_empty() {
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let n = digits(fraction);
            if n == 0 {
                return false;
            }
            rest = &fraction[n..];
        }
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"].into_iter().find(|u| rest.starts_with(u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    !s.is_empty()
}

/// Go durations: `parse` accepts only what the CRD pattern accepts, and `format` round-trips.
pub fn duration(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let mut durations = Vec::new();
    if let Ok(d) = crate::duration::parse(input) {
        assert!(matches_go_duration(input), "parse accepted {input:?}, which the CRD pattern rejects");
        durations.push(d);
    }
    if let Some(bytes) = data.get(..8) {
        let secs = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
        durations.push(Duration::from_secs(secs));
    }
    for d in durations {
        let text = crate::duration::format(d);
        assert!(matches_go_duration(&text), "format gave {text:?}");
        // Exact only while the seconds fit an f64's mantissa, as `parse` sums in f64.
        if d.as_secs() < 1 << 53 {
            assert_eq!(crate::duration::parse(&text), Ok(Duration::from_secs(d.as_secs())), "round trip of {text:?}");
        }
    }
}

fn url_client() -> &'static TokenClient {
    static CLIENT: OnceLock<TokenClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let options = crate::token::ClientOptions {
            allowed_hosts: Some(ALLOWED_HOSTS.iter().map(|h| h.to_string()).collect()),
            ..Default::default()
        };
        TokenClient::new(options).expect("token client")
    })
}

/// The userinfo of a URL as a browser would split it, if any.
fn userinfo(url: &str) -> Option<&str> {
    let after_scheme = url.split_once(':')?.1.trim_start_matches(['/', '\\']);
    let authority = after_scheme.split(['/', '\\', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

/// Endpoint URL checking. First byte: endpoint type and caBundle presence; then `spec.endpoint.url`.
/// An accepted URL always names an allowed host over an allowed scheme, the endpoint's path and
/// nothing else; a rejection never shows a password in the URL.
pub fn endpoint_url(data: &[u8]) {
    let Some((&selector, raw)) = data.split_first() else { return };
    let endpoint = if selector & 1 == 0 { EndpointType::Navigator } else { EndpointType::Csp };
    let base_url = String::from_utf8_lossy(&plant(raw, SECRET_MARKER, "")).into_owned();
    let request = TokenRequest {
        endpoint_type: endpoint,
        base_url: base_url.clone(),
        org_id: "org".into(),
        grant: Grant::ClientCredentials { client_id: "client-id".into(), client_secret: Sensitive::new(SECRET_MARKER) },
        scope: None,
        validity: None,
        ca_bundle: (selector & 2 != 0).then(|| "bundle".into()),
    };
    match url_client().checked_url(&request) {
        Ok(url) => {
            let host = url.host_str().expect("an accepted URL has a host");
            assert!(ALLOWED_HOSTS.iter().any(|a| a.trim_matches(['[', ']']) == host.trim_matches(['[', ']'])), "host {host:?} of {url}");
            let loopback = ["localhost", "127.0.0.1", "[::1]"].contains(&host);
            assert!(url.scheme() == "https" || (url.scheme() == "http" && loopback && request.ca_bundle.is_none()), "{url}");
            assert!(url.username().is_empty() && url.password().is_none(), "credentials in {url}");
            let path = match endpoint {
                EndpointType::Navigator => "/cphub/api/auth/v2/authn/authorize",
                EndpointType::Csp => "/csp/gateway/am/api/auth/token",
            };
            assert!(url.path().ends_with(path), "path of {url}");
            assert!(url.query().is_none() && url.fragment().is_none(), "query or fragment in {url}");
        }
        Err(error) => {
            // Only a marker that stands in the userinfo alone is a password; in the host it is not.
            let in_userinfo = userinfo(&base_url).map_or(0, |info| info.matches(SECRET_MARKER).count());
            if in_userinfo > 0 && in_userinfo == base_url.matches(SECRET_MARKER).count() {
                assert_hidden(SECRET_MARKER, &String::from_utf8_lossy(raw), &shown(&error));
            }
        }
    }
}

/// PEM `caBundle` parsing: an accepted bundle has between one and one certificate per PEM section.
pub fn ca_bundle(data: &[u8]) {
    let bundle = String::from_utf8_lossy(data);
    match client::ca_bundle_roots(&bundle) {
        Ok(roots) => {
            let sections = bundle.matches("-----BEGIN ").count();
            assert!(!roots.is_empty() && roots.len() <= sections, "{} roots from {sections} sections", roots.len());
        }
        Err(error) => {
            let shown = shown(&error);
            assert!(shown.len() <= MAX_MESSAGE_BYTES, "message of {} bytes", shown.len());
        }
    }
}

/// The id token planted by [`template`] (when byte 0 says so), hidden like the access token.
pub const ID_TOKEN_MARKER: &str = "ID-TOKEN-MARKER-7c3a0b14";
/// The longest template [`template_source`] generates: the CRD's 16 KiB.
pub const MAX_GENERATED_BYTES: usize = 16 * 1024;

/// One `spec.target.template.data` value. Byte 0: bit 0 clear, the rest is the template itself
/// (raw mode); set, the rest is a program that generates one ([`template_source`]). Bit 1: an
/// id token is present. Rendered with the secret markers as the tokens: rendering ends, its
/// output stays within the bound, text without openers comes out unchanged, an error is short
/// and never shows a token (only what the template's own text already shows), and the error
/// does not depend on the token unless it is a size limit (so the pre-check with placeholders
/// catches every other error before a token is requested).
pub fn template(data: &[u8]) {
    use crate::template::{MAX_OUTPUT_BYTES, Variables, check, render_all};
    let Some((&mode, rest)) = data.split_first() else { return };
    let source = if mode & 1 == 0 {
        let Ok(source) = std::str::from_utf8(rest) else { return };
        source.to_owned()
    } else {
        template_source(rest)
    };
    let templates = std::collections::BTreeMap::from([("key".to_owned(), source.clone())]);
    let at = Timestamp::UNIX_EPOCH;
    let id_token = if mode & 2 == 0 { "" } else { ID_TOKEN_MARKER };
    let variables = Variables {
        access_token: SECRET_MARKER,
        id_token,
        issued_at: at,
        expires_at: at,
        org_id: "org",
        scope: "",
        name: "name",
        namespace: "namespace",
    };
    let rendered = render_all(&templates, &variables);
    let is_limit = |problem: &str| {
        ["renders to more than", "rendering takes more than"].iter().any(|p| problem.starts_with(p))
            || problem.contains("makes a value of more than")
    };
    let checked = check(&templates, "org", "name", "namespace");
    match &rendered {
        Ok(out) => {
            let out = &out["key"];
            assert!(out.len() <= MAX_OUTPUT_BYTES, "output of {} bytes", out.len());
            if !source.contains("{{") && !source.contains("{%") {
                assert_eq!(out, &source, "text without tags renders as itself");
            }
        }
        Err(error) => {
            let shown = format!("{error} {error:?}");
            assert_eq!(error.key, "key");
            assert!(shown.len() <= MAX_MESSAGE_BYTES, "message of {} bytes", shown.len());
            assert_hidden(SECRET_MARKER, &source, &shown);
            assert_hidden(ID_TOKEN_MARKER, &source, &shown);
        }
    }
    match (rendered, checked) {
        (Err(r), Err(c)) if !is_limit(&r.problem) || !is_limit(&c.problem) => assert_eq!(r, c, "errors independent of the token"),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => assert!(is_limit(&e.problem), "only limits depend on the token: {e}"),
        _ => {}
    }
}

/// A hostile template from a small program, so a fuzzer reaches inputs that byte mutations
/// rarely build: thousands of nested brackets, `{% if %}` blocks or filters, runs of openers
/// and closers. Each step is an op byte (low 4 bits: what; high 4 bits: a variant) and its
/// operands; counts are 2 bytes (up to 65,535, cut at [`MAX_GENERATED_BYTES`]).
pub fn template_source(program: &[u8]) -> String {
    const OPENERS: &[&str] = &["[", "(", "{", "{{", "{%", "<", "\"", "'", "{#", "${", "{{-", "{%-", "| ", "not ", "if "];
    const CLOSERS: &[&str] = &["]", ")", "}", "}}", "%}", ">", "\"", "'", "#}", "}}}", "-}}", "-%}", "%}}", " ", "\\"];
    const ATOMS: &[&str] = &[
        "accessToken",
        "idToken",
        "tokenType",
        "issuedAt",
        "issuedAtUnix",
        "expiresAt",
        "expiresAtUnix",
        "orgId",
        "scope",
        "name",
        "namespace",
        "\"x\"",
        "'\\n'",
        "0",
        "-1",
        "9223372036854775807",
        "true",
        "false",
        "accesstoken",
        "not",
    ];
    const FILTERS: &[&str] = &["b64encode", "tojson", "upper", "lower", "trim", "base64", "json", "nope"];
    const TAGS: &[&str] = &["if", "elif", "else", "endif", "if not", "for", "raw", "endfor", "include", ""];
    let mut bytes = program.iter().copied();
    let mut out = String::new();
    let mut last = String::new();
    while out.len() < MAX_GENERATED_BYTES {
        let Some(op) = bytes.next() else { break };
        let mut byte = || bytes.next().unwrap_or(0);
        let pick = |list: &'static [&'static str], b: u8| list[usize::from(b) % list.len()];
        let variant = op >> 4;
        let mut chunk = String::new();
        match op & 15 {
            0 | 1 => {
                let (open, close) = (pick(OPENERS, byte()), pick(CLOSERS, byte()));
                let depth = usize::from(u16::from_le_bytes([byte(), byte()]));
                let (before, after) = [("{{ ", " }}"), ("{% if ", " %}"), ("", ""), ("{{ name | ", " }}")][usize::from(variant & 3)];
                chunk.push_str(before);
                repeat(&mut chunk, open, depth);
                chunk.push_str(pick(ATOMS, byte()));
                repeat(&mut chunk, close, if variant & 4 == 0 { depth } else { depth / 2 });
                chunk.push_str(after);
            }
            2 => {
                let depth = usize::from(u16::from_le_bytes([byte(), byte()]));
                let tag = if variant & 1 == 0 { "{% if " } else { "{%- if not " };
                repeat(&mut chunk, &format!("{tag}{} %}}x", pick(ATOMS, byte())), depth);
                let ends = [depth, depth.saturating_sub(1), depth + 1, 8, 9, 0][usize::from(variant >> 1) % 6];
                repeat(&mut chunk, "{% endif %}", ends);
            }
            3 => {
                let filters = usize::from(u16::from_le_bytes([byte(), byte()]));
                chunk.push_str(if variant & 1 == 0 { "{{ " } else { "{% if " });
                chunk.push_str(pick(ATOMS, byte()));
                let filter = pick(FILTERS, byte());
                for i in 0..filters.min(MAX_GENERATED_BYTES / 3) {
                    chunk.push_str(if variant & 2 == 0 { " | " } else { "|" });
                    chunk.push_str(if variant & 4 == 0 { filter } else { FILTERS[i % 5] });
                }
                chunk.push_str(if variant & 1 == 0 { " }}" } else { " %}{% endif %}" });
            }
            4 => {
                let closer = pick(CLOSERS, byte());
                repeat(&mut chunk, closer, usize::from(u16::from_le_bytes([byte(), byte()])));
            }
            5 => {
                let len = usize::from(byte());
                let text: Vec<u8> = (0..len).map(|_| byte()).collect();
                chunk.push_str(&String::from_utf8_lossy(&text));
            }
            6 => {
                let (atom, filter) = (pick(ATOMS, byte()), pick(FILTERS, byte()));
                let trim = ["", "-"][usize::from(variant & 1)];
                chunk = format!("{{{{{trim} {atom} | {filter} {trim}}}}}");
            }
            7 => {
                let (tag, atom) = (pick(TAGS, byte()), pick(ATOMS, byte()));
                let trim = ["", "-"][usize::from(variant & 1)];
                chunk = if variant & 2 == 0 { format!("{{%{trim} {tag} {atom} {trim}%}}") } else { format!("{{%{trim} {tag} {trim}%}}") };
            }
            8 => {
                let quote = ["\"", "'"][usize::from(variant & 1)];
                let len = usize::from(u16::from_le_bytes([byte(), byte()]));
                chunk.push_str("{{ ");
                chunk.push_str(quote);
                repeat(&mut chunk, ["é", "\\\"", "\\n", "\\q", "x", "\u{1}"][usize::from(variant >> 1) % 6], len);
                if variant & 8 == 0 {
                    chunk.push_str(quote);
                    chunk.push_str(" | b64encode | b64encode | b64encode | upper | tojson }}");
                }
            }
            9 => repeat(&mut chunk, &last, usize::from(byte())),
            10 => {
                let opener = pick(OPENERS, byte());
                repeat(&mut chunk, opener, usize::from(u16::from_le_bytes([byte(), byte()])));
            }
            _ => chunk.push_str(pick(&[" ", "\n", "\t", "x", "é", "😀", "{", "}", "%", "#", "-", "|"], op >> 4)),
        }
        let room = MAX_GENERATED_BYTES - out.len();
        let mut cut = chunk.len().min(room);
        while !chunk.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&chunk[..cut]);
        chunk.truncate(cut);
        if !chunk.is_empty() {
            last = chunk;
        }
    }
    out
}

/// `unit` `times` times onto `out`, stopping at [`MAX_GENERATED_BYTES`].
fn repeat(out: &mut String, unit: &str, times: usize) {
    let times = if unit.is_empty() { 0 } else { times.min((MAX_GENERATED_BYTES + unit.len()).saturating_sub(out.len()) / unit.len()) };
    for _ in 0..times {
        out.push_str(unit);
    }
}
