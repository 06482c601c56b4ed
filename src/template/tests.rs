//! The template language as users write it: every variable and filter, the syntax, realistic
//! templates whose output is parsed, and the error messages.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::*;

pub(super) fn variables() -> Variables<'static> {
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

pub(super) fn one(key: &str, source: &str) -> BTreeMap<String, String> {
    [(key.to_owned(), source.to_owned())].into()
}

/// The rendered text, or the problem (without the key prefix).
fn render(source: &str) -> Result<String, String> {
    render_all(&one("k", source), &variables()).map(|mut out| out.remove("k").unwrap()).map_err(|e| e.problem)
}

fn problem(source: &str) -> String {
    render(source).expect_err(source)
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
    let json = render(r#"{"token": {{ accessToken | tojson }}, "exp": {{ expiresAtUnix | tojson }} }"#).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["token"], "eyJ.SECRET-ACCESS.sig");
    assert_eq!(parsed["exp"], 1_795_948_200);
    let b64 = render("{{ accessToken | b64encode }}").unwrap();
    assert_eq!(STANDARD.decode(&b64).unwrap(), b"eyJ.SECRET-ACCESS.sig");
    assert_eq!(render("{{ \"  Mixed Case \" | trim | upper }}|{{ tokenType | lower }}").unwrap(), "MIXED CASE|bearer");
    assert_eq!(render("{{ \"a\\\"b\\\\\" | tojson }} {{ true | tojson }} {{ -3 | tojson }}").unwrap(), r#""a\"b\\" true -3"#);
    assert_eq!(render("{{ expiresAtUnix | b64encode }}").unwrap(), STANDARD.encode("1795948200"));
    assert_eq!(render("{{ accessToken | tojson | tojson }}").unwrap(), r#""\"eyJ.SECRET-ACCESS.sig\"""#);
}

#[test]
fn literals_and_escapes() {
    assert_eq!(render(r#"{{ "a\tb\nc\"d\'e\\" }}"#).unwrap(), "a\tb\nc\"d'e\\");
    assert_eq!(render(r#"{{ 'single "quotes"' }}{{ 42 }}{{ false }}"#).unwrap(), "single \"quotes\"42false");
    assert_eq!(render(r#"{{ "}}" }}{{ '%}' }}"#).unwrap(), "}}%}");
}

#[test]
fn closers_and_comment_markers_in_text_are_text() {
    let text = "}} %} {# #} }}} -}} {#TOKEN} %}}";
    assert_eq!(render(text).unwrap(), text);
    assert_eq!(render("{{ tokenType }}}").unwrap(), "Bearer}");
    assert_eq!(render("{{{ tokenType }}}").unwrap(), "{Bearer}");
    assert_eq!(render("{{{{ tokenType }}}}").unwrap(), "{{Bearer}}");
    assert_eq!(render("a { b {x} %").unwrap(), "a { b {x} %");
    assert_eq!(render("{").unwrap(), "{");
    assert_eq!(render("").unwrap(), "");
}

#[test]
fn trim_markers_strip_white_space_next_to_them() {
    assert_eq!(render("a  \n {{- tokenType -}} \n\t b").unwrap(), "aBearerb");
    assert_eq!(render("a {{- tokenType }} b").unwrap(), "aBearer b");
    let source = "[\n  {%- if accessToken %}\n  yes\n  {%- else %}\n  no\n  {%- endif %}\n]";
    assert_eq!(render(source).unwrap(), "[\n  yes\n]");
    assert_eq!(render("{%- if true -%}  x  {%- endif -%}").unwrap(), "x");
}

#[test]
fn conditions_pick_one_branch() {
    let pick = "{% if idToken %}id{% elif scope %}scope{% elif not orgId %}none{% else %}neither{% endif %}";
    assert_eq!(render(pick).unwrap(), "neither");
    assert_eq!(render("{% if accessToken %}a{% elif true %}b{% else %}c{% endif %}").unwrap(), "a");
    assert_eq!(render("{% if '' %}a{% elif 1 %}b{% else %}c{% endif %}").unwrap(), "b");
    assert_eq!(render("{% if 0 %}a{% elif false %}b{% endif %}|{% if not 0 %}c{% endif %}").unwrap(), "|c");
    assert_eq!(render("{% if idToken | tojson %}quoted \"\" is not empty{% endif %}").unwrap(), "quoted \"\" is not empty");
    assert_eq!(render("{% if scope | trim %}x{% else %}y{% endif %}").unwrap(), "y");
    let nested = "{% if accessToken %}1{% if idToken %}2{% else %}3{% if true %}4{% endif %}{% endif %}5{% endif %}6";
    assert_eq!(render(nested).unwrap(), "13456");
    let eight = format!("{}{{{{ accessToken }}}}{}", "{% if accessToken %}".repeat(8), "{% endif %}".repeat(8));
    assert_eq!(render(&eight).unwrap(), "eyJ.SECRET-ACCESS.sig");
}

#[test]
fn a_bad_template_names_its_key_and_position_and_never_the_token() {
    let err = render_all(&one("header", "Bearer {{ accessToken"), &variables()).unwrap_err();
    assert_eq!(err.key, "header");
    assert_eq!(err.to_string(), r#"spec.target.template.data[header]: unclosed "{{" at line 1, column 8; close it with "}}""#);
    let err = render_all(&one("cfg", "line one\n{{ acessToken }}"), &variables()).unwrap_err();
    assert_eq!(err.problem, r#"unknown variable "acessToken" at line 2, column 4; did you mean "accessToken"?"#);
    let err = render_all(&one("f", "{{ accessToken | no_such_filter }}"), &variables()).unwrap_err();
    assert!(!err.to_string().contains("SECRET-ACCESS"), "{err}");
    assert!(check(&one("cfg", "{{ acessToken }}"), "org", "n", "ns").is_err(), "undefined names fail the check");
    assert!(check(&one("ok", "{{ accessToken }}"), "org", "n", "ns").is_ok());
}

#[test]
fn error_messages() {
    let cases = [
        ("{{ accesstoken }}", r#"unknown variable "accesstoken" at line 1, column 4; did you mean "accessToken"?"#),
        (
            "{{ user }}",
            "unknown variable \"user\" at line 1, column 4; variables: accessToken, idToken, tokenType, issuedAt, issuedAtUnix, \
             expiresAt, expiresAtUnix, orgId, scope, name, namespace",
        ),
        ("{{ accessToken | base64 }}", r#"unknown filter "base64" at line 1, column 18; did you mean "b64encode"?"#),
        ("{{ accessToken | json }}", r#"unknown filter "json" at line 1, column 18; did you mean "tojson"?"#),
        ("{{ accessToken | sha256 }}", r#"unknown filter "sha256" at line 1, column 18; filters: b64encode, tojson, upper, lower, trim"#),
        ("a\n  {% if name", r#"unclosed "{%" at line 2, column 3; close it with "%}""#),
        ("{% if accessToken %}\nx", r#""if" without "{% endif %}" at line 1, column 4"#),
        ("x {% endif %}", r#""endif" without an open "if" at line 1, column 6"#),
        ("{% else %}", r#""else" without an open "if" at line 1, column 4"#),
        ("{% elif true %}", r#""elif" without an open "if" at line 1, column 4"#),
        ("{% if 1 %}{% else %}{% else %}{% endif %}", r#"second "else" at line 1, column 24; the first is at line 1, column 14"#),
        ("{% if 1 %}{% else %}{% elif 1 %}{% endif %}", r#""elif" after "else" at line 1, column 24; the "else" is at line 1, column 14"#),
        ("{% if 1 %}{% else if 2 %}", r#"unexpected "if" after "else" at line 1, column 19; write "{% elif condition %}""#),
        ("{% endif x %}", r#"unexpected "x" after "endif" at line 1, column 10; expected "%}""#),
        ("{% raw %}x{% endraw %}", r#"unknown tag "raw" at line 1, column 4; supported: if, elif, else, endif"#),
        ("{% for x in y %}", r#"unknown tag "for" at line 1, column 4; supported: if, elif, else, endif"#),
        ("{% include \"x\" %}", r#"unknown tag "include" at line 1, column 4; supported: if, elif, else, endif"#),
        ("{% endfi %}", r#"unknown tag "endfi" at line 1, column 4; did you mean "endif"?"#),
        ("{% %}", r#"expected a tag name, found "%}" at line 1, column 4; supported: if, elif, else, endif"#),
        ("{% if %}", r#""if" needs a condition at line 1, column 7"#),
        ("{{ }}", r#"expected a variable, a string, a number, true or false, found nothing at line 1, column 4"#),
        (
            "{{ a.b }}",
            r#"unknown variable "a" at line 1, column 4; variables: accessToken, idToken, tokenType, issuedAt, issuedAtUnix, expiresAt, expiresAtUnix, orgId, scope, name, namespace"#,
        ),
        ("{{ name.b }}", r#"unexpected "." at line 1, column 8; expected "|" or "}}""#),
        ("{{ [name] }}", r#"expected a variable, a string, a number, true or false, found "[" at line 1, column 4"#),
        ("{{ name name }}", r#"unexpected "name" at line 1, column 9; expected "|" or "}}""#),
        ("{{ name %}", r#"unexpected "%}" at line 1, column 9; expected "|" or "}}""#),
        ("{% if name }}", r#"unexpected "}}" at line 1, column 12; expected "|" or "%}""#),
        (
            "{{ name | }}",
            r#"expected a filter name after "|", found "}}" at line 1, column 11; filters: b64encode, tojson, upper, lower, trim"#,
        ),
        ("{{ \"abc }}", r#"unterminated string at line 1, column 4; close it with ""#),
        (r#"{{ "a\x" }}"#, r#"unknown escape "\\x" in a string at line 1, column 6; a string knows \" \' \\ \n \t"#),
        ("{{ 99999999999999999999 }}", "number out of range at line 1, column 4"),
        (
            "é€😀\n€😀{{ zzz }}",
            r#"unknown variable "zzz" at line 2, column 6; variables: accessToken, idToken, tokenType, issuedAt, issuedAtUnix, expiresAt, expiresAtUnix, orgId, scope, name, namespace"#,
        ),
    ];
    for (source, expected) in cases {
        assert_eq!(problem(source), expected, "{source:?}");
    }
    let long = format!("{{{{ {} }}}}", "x".repeat(5_000));
    assert!(problem(&long).starts_with(&format!("unknown variable \"{}…\" at line 1, column 4", "x".repeat(40))), "{}", problem(&long));
    assert!(problem(&long).len() < 400);
}

#[test]
fn unknown_names_fail_in_branches_that_are_not_taken() {
    assert!(problem("{% if false %}{{ nope }}{% endif %}").starts_with("unknown variable \"nope\""));
    assert!(problem("{% if false %}{{ name | nope }}{% endif %}").starts_with("unknown filter \"nope\""));
    assert!(check(&one("k", "{% if idToken %}{% else %}{{ idTokn }}{% endif %}"), "org", "n", "ns").is_err());
}

#[test]
fn limits_name_themselves() {
    let sixteen = format!("{{{{ name{} }}}}", " | trim".repeat(16));
    assert_eq!(render(&sixteen).unwrap(), "partner-api");
    let seventeen = format!("{{{{ name{} }}}}", " | trim".repeat(17));
    assert_eq!(problem(&seventeen), "more than 16 filters in one expression at line 1, column 123");
    let nine = format!("{}{}", "{% if true %}".repeat(9), "{% endif %}".repeat(9));
    assert_eq!(problem(&nine), "blocks nested more than 8 deep at line 1, column 108");
    let big = "{{ accessToken }}".repeat(5_000);
    assert_eq!(problem(&big), format!("renders to more than 64 KiB at line 1, column {}", 3120 * 17 + 4));
    let text = "x".repeat(MAX_OUTPUT_BYTES + 1);
    assert_eq!(problem(&text), "renders to more than 64 KiB at line 1, column 1");
    assert_eq!(render(&text[1..]).unwrap().len(), MAX_OUTPUT_BYTES);
    let value = format!("{{{{ \"{}\" | b64encode }}}}", "x".repeat(49_153));
    assert_eq!(problem(&value), "\"b64encode\" makes a value of more than 64 KiB at line 1, column 49162");
    let fits = format!("{{% if \"{}\" | b64encode %}}{{% endif %}}", "x".repeat(49_152));
    assert_eq!(render(&fits).unwrap(), "");
    // 4 filters of 60,000 bytes each: the 5th expression's 2nd filter crosses 1 MiB.
    let work = format!("{{% if \"{}\" | upper | lower | upper | lower %}}{{% endif %}}\n", "x".repeat(60_000)).repeat(5);
    let budget = "rendering takes more than 1 MiB of filter results and output";
    assert_eq!(problem(&work), format!("{budget} at line 5, column 60020; use fewer filters"));
    assert_eq!(problem(&work.replace('\n', "")), format!("{budget} at line 1, column {}; use fewer filters", 4 * 60_054 + 60_020));
}

#[test]
fn check_uses_placeholders() {
    assert!(check(&one("a", "{% if idToken %}{{ idToken | upper }}{% endif %} {{ scope }}"), "org", "n", "ns").is_ok());
    let err = check(&one("a", "{{ orgId }}{{ x }}"), "org", "n", "ns").unwrap_err();
    assert_eq!(err.key, "a");
    assert!(check(&one("big", &"{{ orgId }}".repeat(7_000)), &"o".repeat(10), "n", "ns").is_err(), "the org id is real");
}

#[test]
fn errors_never_show_a_token() {
    let mut vars = variables();
    vars.id_token = "ID-TOKEN-VALUE";
    // A template may spell the token itself; the message still must not show it.
    let err = render_all(&one("k", "{{ eyJ.SECRET-ACCESS.sig }} {{ ID-TOKEN-VALUE }}"), &vars).unwrap_err();
    assert!(!err.to_string().contains("SECRET-ACCESS") && !err.to_string().contains("ID-TOKEN"), "{err}");
    let err = render_all(&one("k", "{{ 'eyJ.SECRET-ACCESS.sig' | nope }}"), &vars).unwrap_err();
    assert!(!err.to_string().contains("SECRET-ACCESS"), "{err}");
    let err = render_all(&one("k", "{% if accessToken %}{{ accessToken }}{% endif %}{% endif %}"), &vars).unwrap_err();
    assert!(!err.to_string().contains("SECRET-ACCESS"), "{err}");
}

#[test]
fn minified_json_parses() {
    let source =
        r#"{"auth":{"token":{{ accessToken | tojson }},"exp":{{ expiresAtUnix }},"org":{{orgId|tojson}},"scope":{{ scope | tojson }}}}"#;
    let out = render(source).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed["auth"]["token"], "eyJ.SECRET-ACCESS.sig");
    assert_eq!(parsed["auth"]["exp"], 1_795_948_200);
    assert_eq!(parsed["auth"]["org"], "6b8f1c2e-3d4a-4b5c-9d6e-7f8091a2b3c4");
    assert_eq!(parsed["auth"]["scope"], "");
}

#[test]
fn one_line_dockerconfigjson_parses() {
    let source = r#"{"auths":{"registry.example.com":{"username":"token","password":{{ accessToken | tojson }},"auth":"dG9rZW46{{ accessToken | b64encode }}"}}}"#;
    let out = render(source).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = &parsed["auths"]["registry.example.com"];
    assert_eq!(entry["password"], "eyJ.SECRET-ACCESS.sig");
    let auth = STANDARD.decode(entry["auth"].as_str().unwrap()).unwrap();
    assert_eq!(auth, b"token:eyJ.SECRET-ACCESS.sig");
}

#[test]
fn shell_snippet_keeps_its_braces_and_percent_signs() {
    let source = "#!/bin/sh\nTOKEN='{{ accessToken }}'\n[ ${#TOKEN} -gt 0 ] || exit 1\nprintf '%s%%}\\n' \"$TOKEN\" {# not a comment #}\n";
    let out = render(source).unwrap();
    assert_eq!(
        out,
        "#!/bin/sh\nTOKEN='eyJ.SECRET-ACCESS.sig'\n[ ${#TOKEN} -gt 0 ] || exit 1\nprintf '%s%%}\\n' \"$TOKEN\" {# not a comment #}\n"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[2], "[ ${#TOKEN} -gt 0 ] || exit 1");
}

#[test]
fn yaml_config_parses() {
    let source = "\
auth:
  type: {{ tokenType }}
  token: {{ accessToken | tojson }}
  expiresAt: {{ expiresAt | tojson }}
  expiresAtUnix: {{ expiresAtUnix }}
{%- if idToken %}
  idToken: {{ idToken | tojson }}
{%- endif %}
  owner: {{ namespace }}/{{ name }}
";
    let out = render(source).unwrap();
    let parsed: serde_norway::Value = serde_norway::from_str(&out).unwrap();
    assert_eq!(parsed["auth"]["type"].as_str(), Some("Bearer"));
    assert_eq!(parsed["auth"]["token"].as_str(), Some("eyJ.SECRET-ACCESS.sig"));
    assert_eq!(parsed["auth"]["expiresAt"].as_str(), Some("2026-11-29T10:30:00Z"));
    assert_eq!(parsed["auth"]["expiresAtUnix"].as_i64(), Some(1_795_948_200));
    assert!(parsed["auth"].get("idToken").is_none());
    assert_eq!(parsed["auth"]["owner"].as_str(), Some("team-a/partner-api"));
}
