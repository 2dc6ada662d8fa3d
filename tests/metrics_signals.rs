//! The SIGINT/SIGTERM handler: the first signal calls back and is recorded, a
//! second exits at once with that signal's code, installing twice is an error,
//! and after the guard is dropped a signal exits at once.
//!
//! Handlers are process-wide, so the in-process checks share one test, and the
//! exiting cases run this test binary again as a child process (selected by the
//! `ARD_SIGNALS_CHILD` variable) and check its exit code.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use ard_pipeline::metrics::{self, MetricsError, Signal};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::low_level::raise;

const CHILD_ENV: &str = "ARD_SIGNALS_CHILD";
const WAIT: Duration = Duration::from_secs(5);

/// Installs a handler that reports the first signal on a channel.
fn install_reporting() -> (metrics::SignalGuard, mpsc::Receiver<Signal>) {
    let (tx, rx) = mpsc::channel();
    let guard = metrics::install(move |signal| {
        let _ = tx.send(signal);
    })
    .expect("install");
    (guard, rx)
}

#[test]
fn first_signal_calls_back_once_and_install_twice_is_an_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (guard, rx) = install_reporting();
    match metrics::install(|_| {}) {
        Err(MetricsError::SignalsAlreadyInstalled) => {}
        other => panic!("second install: {other:?}"),
    }
    assert_eq!(guard.received(), None);
    raise(SIGTERM).expect("raise");
    assert_eq!(rx.recv_timeout(WAIT), Ok(Signal::Terminate));
    assert_eq!(guard.received(), Some(Signal::Terminate));
    drop(guard);

    // A fresh install starts fresh.
    let (guard, rx) = install_reporting();
    assert_eq!(guard.received(), None);
    raise(SIGINT).expect("raise");
    assert_eq!(rx.recv_timeout(WAIT), Ok(Signal::Interrupt));
    assert_eq!(guard.received(), Some(Signal::Interrupt));
    assert_eq!(guard.received().map(Signal::exit_code), Some(130));
    drop(guard);
}

/// Runs this binary's `child` test in a child process in `mode`; its exit code.
fn run_child(mode: &str) -> Option<i32> {
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .expect("run child");
    eprintln!(
        "child {mode}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.status.code()
}

#[test]
fn second_signal_exits_at_once_with_its_code() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    assert_eq!(run_child("double"), Some(130));
}

#[test]
fn after_the_guard_is_dropped_a_signal_exits_at_once() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    assert_eq!(run_child("after_drop"), Some(143));
}

/// Only does something in a child process (see `run_child`).
#[test]
fn child() {
    let Some(mode) = std::env::var(CHILD_ENV).ok() else {
        return;
    };
    match mode.as_str() {
        "double" => {
            let (_guard, rx) = install_reporting();
            raise(SIGTERM).expect("raise");
            assert_eq!(rx.recv_timeout(WAIT), Ok(Signal::Terminate));
            raise(SIGINT).expect("raise"); // exits with 130 here
        }
        "after_drop" => {
            let (guard, _rx) = install_reporting();
            drop(guard);
            raise(SIGTERM).expect("raise"); // exits with 143 here
        }
        other => panic!("unknown child mode {other}"),
    }
    std::thread::sleep(WAIT);
    std::process::exit(3); // not reached when the handler works
}
