//! Start-up drops the binary's code and constants from the resident set once the model is loaded
//! (`metrics::release_code_pages`): the pages must come back intact when used again, and the relocated
//! read-only data must not be dropped with them (it would come back as the file's bytes, without the
//! loader's relocations: every vtable and string constant behind a pointer would be garbage).
//!
//! One test in a process of its own: another test's thread touching code while this one measures would
//! blur the figure.

use lookout::model::{Model, ModelSource};

#[test]
fn dropped_code_and_constants_come_back_intact() {
    // Loading drops the pages once (Model::load); the self-test then runs tract's plan, lookout's kernels,
    // the preprocessor and the comparison with the reference stored in the binary's constants.
    let (mut model, report) = Model::load_checked(&ModelSource::Builtin).unwrap();
    assert!(!report.outputs.is_empty());

    // Dropped again, what the self-test brought back goes.
    let dropped = lookout::metrics::release_code_pages();
    // Under qemu-user (the ARM test runs) the resident figure is qemu's own process, and its madvise is
    // a hint it may ignore: the amount is checked natively only.
    #[cfg(target_arch = "x86_64")]
    assert!(dropped >= 512, "only {dropped} KiB of code pages were dropped after a model run");
    let _ = dropped;

    // Everything still works from pages read back from the file: dyn calls through vtables, formatting,
    // the model's run and its comparison with the constants, twice.
    for _ in 0..2 {
        let again = model.self_test().unwrap();
        assert_eq!(again.outputs.len(), report.outputs.len());
        for ((n1, m1, t1, _), (n2, m2, t2, _)) in again.outputs.iter().zip(&report.outputs) {
            assert_eq!((n1, m1, t1), (n2, m2, t2));
        }
        assert!(lookout::metrics::release_code_pages() > 0 || cfg!(not(target_arch = "x86_64")));
    }
    let text = format!("{:?}", model.engine);
    assert!(text.contains("Engine"), "{text}");
}
