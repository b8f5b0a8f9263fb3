//! Fuzz target: see `pointflow::testkit::fuzzing::ndjson_import` for what the input means and
//! what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointflow::testkit::fuzzing::ndjson_import(data));
