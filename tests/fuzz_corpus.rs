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
