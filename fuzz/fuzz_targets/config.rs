#![no_main]
// See lookout::fuzzing::config.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::config(data));
