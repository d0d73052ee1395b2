//! The `lookout` binary: everything is in the library; this only turns the outcome into an exit code.

fn main() {
    std::process::exit(lookout::cli::main(std::env::args().skip(1).collect()));
}
