//! Replays every input of the fuzz corpus (fuzz/corpus/<target>/) through the same entry points the
//! fuzz targets use (lookout::fuzzing), so an input that once crashed a parser, and everything the
//! fuzzers found interesting, is checked in every test run without a fuzzer.

mod common;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = common::root().join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        f(&data);
        n += 1;
    }
    assert!(n > 0, "no seed inputs in {}", dir.display());
}

#[test]
fn config_corpus() {
    replay("config", lookout::fuzzing::config);
}

#[test]
fn mjpeg_corpus() {
    replay("mjpeg", lookout::fuzzing::mjpeg);
}

#[test]
fn y4m_corpus() {
    replay("y4m", lookout::fuzzing::y4m);
}

#[test]
fn manifest_corpus() {
    replay("manifest", lookout::fuzzing::manifest);
}
