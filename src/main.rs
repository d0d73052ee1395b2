//! The `lookout` binary: everything is in the library; this only turns the outcome into an exit code.

/// Counts allocations (`lookout bench` reports them per frame) and serves the JPEG decoder's from its
/// arena: see `lookout::metrics::alloc`.
#[global_allocator]
static ALLOCATOR: lookout::metrics::alloc::Counting = lookout::metrics::alloc::Counting;

fn main() {
    std::process::exit(lookout::cli::main(std::env::args().skip(1).collect()));
}
