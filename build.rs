//! Records the target triple so `lookout --version` can say what it was built for, and compiles the C
//! side of the V4L2 layout test (src/capture/v4l2_layout.c) with the target's C compiler: the test links
//! it and compares it with the pre-generated Rust bindings. The object is only linked where the test
//! refers to it; the binary does not contain it.
fn main() {
    println!("cargo:rustc-env=LOOKOUT_TARGET={}", std::env::var("TARGET").unwrap_or_else(|_| "unknown".into()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/capture/v4l2_layout.c");
    cc::Build::new().file("src/capture/v4l2_layout.c").warnings(true).compile("lookout_v4l2_layout");
}
