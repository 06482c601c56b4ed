//! Replays the fuzz corpus (fuzz/corpus/<target>) and every input a fuzzer crashed on
//! (fuzz/regressions/<target>) through the checks the fuzz targets run, on stable Rust and
//! without a fuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use navigator_token_operator::fuzzing::TARGETS;

/// Runs the check of `target` on every stored input; fails naming each input that fails.
fn replay(target: &str) {
    let check = TARGETS.iter().find(|(name, _)| *name == target).expect("known target").1;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = 0;
    let mut failed = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data = std::fs::read(&path).expect("readable input");
            inputs += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(inputs > 0, "no stored inputs for {target}");
    assert!(failed.is_empty(), "{} of {inputs} inputs fail the {target} check: {failed:#?}", failed.len());
}

#[test]
fn fuzz_corpus_token_response() {
    replay("token_response");
}

#[test]
fn fuzz_corpus_jwt() {
    replay("jwt");
}

#[test]
fn fuzz_corpus_error_body() {
    replay("error_body");
}

#[test]
fn fuzz_corpus_duration() {
    replay("duration");
}

#[test]
fn fuzz_corpus_endpoint_url() {
    replay("endpoint_url");
}

#[test]
fn fuzz_corpus_ca_bundle() {
    replay("ca_bundle");
}

#[test]
fn fuzz_corpus_template() {
    replay("template");
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["token_response", "jwt", "error_body", "duration", "endpoint_url", "ca_bundle", "template"]);
}

#[test]
fn template_generator_builds_what_byte_mutation_rarely_does() {
    use navigator_token_operator::fuzzing::{MAX_GENERATED_BYTES, template_source};
    // Op 0, variant 0: `{{ ` + 3,000 × opener 0 (`[`) + atom 0 + 3,000 × closer 0 (`]`) + ` }}`.
    let brackets = template_source(&[0x00, 0, 0, 0xb8, 0x0b, 0]);
    assert_eq!(brackets, format!("{{{{ {}accessToken{} }}}}", "[".repeat(3_000), "]".repeat(3_000)));
    // Op 2, variant 0: 5,000 nested `{% if accessToken %}x`, as many `{% endif %}`, cut at 16 KiB.
    let ifs = template_source(&[0x02, 0x88, 0x13, 0]);
    assert!(ifs.starts_with("{% if accessToken %}x{% if accessToken %}x"), "{ifs}");
    assert_eq!(ifs.len(), MAX_GENERATED_BYTES);
    // Op 3, variant 0: a chain of 8,000 `| b64encode`, cut at 16 KiB.
    let chain = template_source(&[0x03, 0x40, 0x1f, 0, 0]);
    assert!(chain.starts_with("{{ accessToken | b64encode | b64encode"), "{chain}");
    assert_eq!(chain.len(), MAX_GENERATED_BYTES);
    // Op 4: stray closers; op 5: raw text; op 9: the last piece again.
    assert_eq!(template_source(&[0x04, 3, 2, 0, 0x05, 2, b'a', b'b', 0x09, 2]), "}}}}ababab");
    assert_eq!(template_source(&[]), "");
    for seed in 0..=255u8 {
        let program: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(seed).wrapping_add(seed)).collect();
        assert!(template_source(&program).len() <= MAX_GENERATED_BYTES);
    }
}
