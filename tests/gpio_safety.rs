//! Every GPIO line at its safe level after a panic anywhere in the process. A test binary of its own:
//! the panic hook's flag is process-wide and stays set.

mod common;
use common::Timed;

use std::time::{Duration, Instant};

use lookout::output::gpio::{Binding, Gpio, GpioCmd, Lines, Mode, OutputLine};

#[test]
fn a_panic_on_any_thread_switches_every_line_off() {
    lookout::output::gpio::install_panic_hook();
    let (pulse, latched) = (Timed::default(), Timed::default());
    let lines = Lines {
        outputs: vec![
            // Active low: off is high.
            OutputLine::new(pulse.clone(), true, Mode::Pulse(Duration::from_secs(60)), Binding::Rules(vec![])),
            OutputLine::new(latched.clone(), false, Mode::Latched, Binding::Rules(vec![])),
        ],
    };
    let (gpio, thread) = Gpio::spawn(lines).unwrap();
    gpio.send(GpioCmd::Alert(lookout::output::sentence::field("door")));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pulse.0.lock().unwrap().last().unwrap().1, "on (low) in the middle of a 60 s pulse");
    // A thread that has nothing to do with GPIO panics.
    let t = Instant::now();
    let _ = std::thread::spawn(|| panic!("a bug somewhere")).join();
    while !pulse.0.lock().unwrap().last().unwrap().1 {
        assert!(t.elapsed() < Duration::from_secs(1), "the line stayed on after the panic");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(!latched.0.lock().unwrap().last().unwrap().1, "the latched line is off too");
    thread.stop(Duration::from_secs(1));
}
