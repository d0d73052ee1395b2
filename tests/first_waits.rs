//! The first time a thread does something is not allowed to allocate either: a thread's first log line
//! and a channel's first wait used to, at a moment that depended on the load (CI, loaded: `lookout
//! bench` counted the GPIO thread's first log line, five allocations, in its steady-state window).
//!
//! Method: lookout's own counting allocator, in a test binary of its own with one test, so no other test
//! allocates meanwhile. Each check is paired with the case that does allocate (std's channel as it comes,
//! a line longer than the stack buffer), so the count is seen to move.

use std::sync::mpsc::Receiver;
use std::time::Duration;

use lookout::metrics::alloc::{self, Counting};

#[global_allocator]
static A: Counting = Counting;

fn all() -> u64 {
    alloc::counts().0
}

/// Allocations on this thread's side of a receive that has to wait (the message comes 30 ms later).
fn first_wait(tx: std::sync::mpsc::SyncSender<u32>, rx: &Receiver<u32>) -> u64 {
    let go = std::sync::Arc::new(std::sync::Barrier::new(2));
    let go2 = go.clone();
    let sender = std::thread::spawn(move || {
        go2.wait();
        std::thread::sleep(Duration::from_millis(30));
        let _ = tx.try_send(7);
    });
    go.wait();
    let before = all();
    let got = rx.recv_timeout(Duration::from_secs(5));
    let n = all() - before;
    assert_eq!(got, Ok(7));
    sender.join().unwrap();
    n
}

#[test]
fn first_log_lines_and_first_channel_waits_allocate_nothing() {
    assert!(alloc::installed(), "lookout's counting allocator serves this test");
    alloc::prime_channel_wait();

    // A channel as std makes it: its first wait allocates the list of waiting receivers.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    assert!(first_wait(tx, &rx) >= 1, "std's first wait on a channel allocates (the control)");
    // lookout's: that wait happened when the channel was made.
    let (tx, rx) = alloc::sync_channel(2);
    assert_eq!(first_wait(tx, &rx), 0, "a primed channel's first wait allocated");

    // A thread's first log line (and a longer one after it) formats on the stack.
    // RUST_LOG as the daemon's unit sets it (edition 2021: set_var is safe; no other thread runs yet).
    std::env::set_var("RUST_LOG", "info");
    lookout::logging::init();
    assert!(log::log_enabled!(log::Level::Info));
    let t = std::thread::spawn(|| {
        let before = all();
        log::info!("gpio: line high");
        log::warn!("alert: rule {} track {} {} {:.2} in frame {} ({} ms)", "door", 42, "person", 0.87, 1234, 49360);
        let short = all() - before;
        let long = "x".repeat(1200);
        let before = all();
        log::error!("{long}");
        (short, all() - before)
    });
    let (short, long) = t.join().unwrap();
    assert_eq!(short, 0, "a thread's first log lines allocated");
    // The long line itself was made on the heap above; writing it spills (the control).
    assert!(long >= 1, "a line longer than the buffer goes to the heap");
}
