#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| navigator_token_operator::fuzzing::template(data));
