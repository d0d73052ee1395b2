#![no_main]
// See lookout::fuzzing::mjpeg.
libfuzzer_sys::fuzz_target!(|data: &[u8]| lookout::fuzzing::mjpeg(data));
