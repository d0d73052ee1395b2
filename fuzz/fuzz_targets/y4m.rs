#![no_main]
// See lookout::fuzzing::y4m.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::y4m(data));
