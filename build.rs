//! Records the target triple so `lookout --version` can say what it was built for.
fn main() {
    println!("cargo:rustc-env=LOOKOUT_TARGET={}", std::env::var("TARGET").unwrap_or_else(|_| "unknown".into()));
    println!("cargo:rerun-if-changed=build.rs");
}
