//! Hostile templates: each returns at once with a result or an error naming the limit, on a
//! thread with a 64 KiB stack (a recursive parser overflows it within a few hundred levels).

use std::time::Instant;

use super::tests::{one, variables};
use super::*;

/// The CRD's limits: 32 keys of at most 16 KiB (16,384 characters) each.
const KEYS: usize = 32;
const KEY_CHARS: usize = 16 * 1024;

/// Runs `f` on a thread whose stack is far too small for recursion on the input.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(64 * 1024).spawn(f).expect("thread").join().expect("no panic, no overflow")
}

fn problem_of(source: String) -> String {
    on_small_stack(move || render_all(&one("k", &source), &variables()).expect_err("refused").problem)
}

/// `unit` repeated to at most `chars` characters.
fn fill(unit: &str, chars: usize) -> String {
    unit.repeat(chars / unit.chars().count())
}

#[test]
fn nested_brackets_are_a_syntax_error_not_a_stack_overflow() {
    let brackets = format!("{{{{ {}{} }}}}", "[".repeat(3_000), "]".repeat(3_000));
    assert_eq!(problem_of(brackets), r#"expected a variable, a string, a number, true or false, found "[" at line 1, column 4"#);
    let parens = format!("{{{{ {}accessToken{} }}}}", "(".repeat(5_000), ")".repeat(5_000));
    assert_eq!(problem_of(parens), r#"expected a variable, a string, a number, true or false, found "(" at line 1, column 4"#);
    let in_if = format!("{{% if {} %}}", "{[(".repeat(5_000));
    assert!(problem_of(in_if).starts_with(r#"expected a variable, a string, a number, true or false, found "{""#));
}

#[test]
fn thousands_of_nested_ifs_stop_at_the_nesting_limit() {
    let blocks = format!("{}x{}", "{% if accessToken %}".repeat(5_000), "{% endif %}".repeat(5_000));
    assert_eq!(problem_of(blocks), "blocks nested more than 8 deep at line 1, column 164");
    let elifs = format!("{{% if 0 %}}{}{{% endif %}}", "{% elif 0 %}x".repeat(5_000));
    assert_eq!(on_small_stack(move || render_all(&one("k", &elifs), &variables()).unwrap()["k"].clone()), "");
    assert!(problem_of("{% endif %}".repeat(5_000)).starts_with("\"endif\" without an open \"if\""));
    assert!(problem_of("{% if 1 %}".repeat(5)).starts_with("\"if\" without \"{% endif %}\" at line 1, column 44"));
}

#[test]
fn thousands_of_openers_are_unclosed_tags() {
    assert_eq!(problem_of("{{".repeat(5_000)), r#"unclosed "{{" at line 1, column 9999; close it with "}}""#);
    assert_eq!(problem_of("{{ ".repeat(5_000)), r#"expected a variable, a string, a number, true or false, found "{" at line 1, column 4"#);
    assert!(problem_of("{%".repeat(5_000)).starts_with(r#"expected a tag name, found "{" at line 1, column 3"#));
    assert_eq!(problem_of(format!("{}{{%", "{".repeat(5_000))), r#"unclosed "{%" at line 1, column 5001; close it with "%}""#);
    assert!(problem_of("{% ".repeat(5_000)).starts_with("expected a tag name"));
    assert!(problem_of(format!("{{{{ \"{}", "\\\"".repeat(5_000))).starts_with("unterminated string at line 1, column 4"));
}

#[test]
fn long_filter_chains_stop_at_the_filter_limit() {
    let chain = format!("{{{{ accessToken{} }}}}", " | b64encode".repeat(8_000));
    assert_eq!(problem_of(chain), "more than 16 filters in one expression at line 1, column 210");
    // Sixteen filters, each result fed into the next, still stop at the value limit.
    let sixteen = format!("{{{{ \"{}\"{} }}}}", "x".repeat(8_000), " | b64encode".repeat(16));
    assert!(problem_of(sixteen).starts_with("\"b64encode\" makes a value of more than 64 KiB"));
}

#[test]
fn stray_closers_are_copied_as_text() {
    let text = fill("}}%}#}{#-}}}}} %}}", KEY_CHARS);
    let expected = text.clone();
    let out = on_small_stack(move || render_all(&one("k", &text), &variables()).unwrap());
    assert_eq!(out["k"], expected);
}

#[test]
fn sixteen_kib_of_values_render_or_hit_the_output_limit() {
    let source = fill("{{ accessToken }}", KEY_CHARS);
    let copy = source.clone();
    let out = on_small_stack(move || render_all(&one("k", &copy), &variables()).unwrap());
    assert_eq!(out["k"].len(), 963 * "eyJ.SECRET-ACCESS.sig".len());
    let long_token = "t".repeat(2_000);
    let err = on_small_stack(move || {
        let variables = Variables { access_token: &long_token, ..variables() };
        render_all(&one("k", &source), &variables).unwrap_err().problem
    });
    assert!(err.starts_with("renders to more than 64 KiB at line 1, column"), "{err}");
}

/// Templates at the CRD's limits built to cost the most, with the limit each one reaches.
fn worst_cases() -> Vec<(&'static str, String, Option<&'static str>)> {
    let tag_soup = fill("{{name}}{%if name%}{%elif 1%}{%else%}{%endif%}", KEY_CHARS);
    let chain = "|upper|lower|b64encode|tojson|trim|upper|lower|b64encode|tojson|trim|b64encode";
    let token_chains = fill(&format!("{{%if accessToken{chain}%}}{{%endif%}}"), KEY_CHARS);
    let name_chains = fill(&format!("{{%if name{chain}%}}{{%endif%}}"), KEY_CHARS);
    let case = "|upper|lower".repeat(7);
    // 30,000 bytes, base64 twice (53,336 bytes), 14 case changes: 840,040 bytes of work.
    let near_budget = format!("{{%if \"{}\"|b64encode|b64encode{case}%}}{{%endif%}}", "é".repeat(15_000));
    // 12,000 bytes, base64 five times (50,576 bytes), 11 case changes: 710,628 bytes, twice.
    let over_budget =
        format!("{{%if \"{}\"{}{}|upper%}}{{%endif%}}", "é".repeat(6_000), "|b64encode".repeat(5), "|upper|lower".repeat(5)).repeat(2);
    vec![
        ("text of 4-byte characters", "😀".repeat(KEY_CHARS), None),
        ("tags and branches", tag_soup, None),
        ("filter chains on the token", token_chains, Some("rendering takes more than 1 MiB")),
        ("filter chains on a name", name_chains, None),
        ("near the work budget", near_budget, None),
        ("over the work budget", over_budget, Some("rendering takes more than 1 MiB")),
        ("over the output limit", fill("{{ accessToken }}", KEY_CHARS), Some("renders to more than 64 KiB")),
        ("nesting", fill("{% if 1 %}", KEY_CHARS), Some("blocks nested more than 8 deep")),
        ("error at the end", fill("{{ name }}", KEY_CHARS - 10) + "{{ nope }}", Some("unknown variable")),
    ]
}

/// Prints how long 32 keys of each worst case take (`cargo test --release --lib
/// worst_case_render_time -- --nocapture`); asserts only the outcome, not the time.
#[test]
fn worst_case_render_time_per_32_keys_of_16_kib() {
    let token = format!("eyJ{}", "x".repeat(2_045));
    for (what, source, limit) in worst_cases() {
        assert!(source.chars().count() <= KEY_CHARS, "{what}: {} characters", source.chars().count());
        let templates: BTreeMap<String, String> = (0..KEYS).map(|i| (format!("key-{i:02}"), source.clone())).collect();
        let token = token.clone();
        let (elapsed, result) = on_small_stack(move || {
            let variables = Variables { access_token: &token, ..variables() };
            let start = Instant::now();
            // Every key, as the controller would if each key were valid on its own.
            let results: Vec<_> = templates.iter().map(|(k, v)| render_all(&[(k.clone(), v.clone())].into(), &variables)).collect();
            (start.elapsed(), results)
        });
        for rendered in result {
            match (rendered, limit) {
                (Ok(out), None) => assert!(out.values().all(|v| v.len() <= MAX_OUTPUT_BYTES)),
                (Err(e), Some(limit)) => assert!(e.problem.starts_with(limit), "{what}: {e}"),
                (other, _) => panic!("{what}: {other:?}"),
            }
        }
        println!("{what:>28}: {:>8.2} ms for {KEYS} keys of {} bytes", elapsed.as_secs_f64() * 1e3, source.len());
    }
}
