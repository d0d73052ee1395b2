#![no_main]
// See lookout::fuzzing::manifest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::manifest(data));
