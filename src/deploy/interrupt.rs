//! Child processes that die with the export, and an export that stops on
//! SIGINT or SIGTERM.
//!
//! Each child (the Python step, a latency probe) runs in a process group of
//! its own, so a Ctrl-C at the terminal reaches only the export, which then
//! ends the child's whole group ([`Interrupt::trigger`], called from the
//! handler of `metrics::signals`) and stops at the next step. A child also
//! gets SIGKILL from the kernel when the export dies in any other way (a
//! second signal, `kill -9`): Linux's parent-death signal. What the export
//! had staged is then removed by the next export into the same folder
//! (`export::Staging`).

use crate::error::{Error, Result};
use crate::metrics::Signal;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Shared between the signal handler and the export: the first signal, and
/// the process group of the child running now.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// 0 until a signal arrives, then its number.
    signal: AtomicI32,
    /// The running child's process id (= its process group id).
    child: Mutex<Option<i32>>,
}

impl Interrupt {
    /// Records `signal` and ends the running child's process group (SIGTERM).
    pub fn trigger(&self, signal: Signal) {
        let _ = self.inner.signal.compare_exchange(
            0,
            signal.number(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let child = self
            .inner
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(pid) = *child {
            terminate_group(pid);
        }
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<Signal> {
        Signal::from_number(self.inner.signal.load(Ordering::SeqCst))
    }

    /// [`Error::Cancelled`] once a signal arrived: call between steps.
    pub fn check(&self) -> Result<()> {
        match self.received() {
            Some(_) => Err(Error::Cancelled),
            None => Ok(()),
        }
    }

    /// Runs `cmd` to its end like [`Command::output`], in a process group of
    /// its own that is ended on a signal, and with the parent-death signal
    /// set. After a signal the child's output is dropped: [`Error::Cancelled`].
    pub fn output(&self, cmd: &mut Command) -> Result<std::io::Result<Output>> {
        use std::process::Stdio;
        let child = {
            let mut running = self
                .inner
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Under the lock: a signal either came before (then no child
            // starts) or finds the child registered and ends it.
            self.check()?;
            let spawned = owned(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(child) => {
                    *running = Some(child.id() as i32);
                    child
                }
                Err(e) => return Ok(Err(e)),
            }
        };
        let output = child.wait_with_output();
        *self
            .inner
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.check()?;
        Ok(output)
    }
}

/// `cmd` set up to run in its own process group and to be killed when this
/// process dies.
fn owned(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: between fork and exec only async-signal-safe calls are made
        // (getpid-free: the parent's id was read before the fork).
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the prctl: the signal would never come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd
}

/// SIGTERM to the process group `pid` (errors ignored: it may be gone).
fn terminate_group(pid: i32) {
    // SAFETY: kill has no memory effects; a negative pid names a group.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
}

/// Whether a process with this id exists (a zombie counts).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_trigger_ends_the_running_child_and_cancels() {
        let interrupt = Interrupt::default();
        let remote = interrupt.clone();
        let began = Instant::now();
        let trigger = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            remote.trigger(Signal::Terminate);
        });
        let out = interrupt.output(Command::new("sleep").arg("30"));
        trigger.join().unwrap();
        assert!(matches!(out, Err(Error::Cancelled)), "{out:?}");
        assert!(began.elapsed() < Duration::from_secs(10));
        assert_eq!(interrupt.received(), Some(Signal::Terminate));
        // Nothing starts after a signal.
        let again = interrupt.output(&mut Command::new("true"));
        assert!(matches!(again, Err(Error::Cancelled)));
    }

    #[test]
    fn without_a_signal_the_output_comes_back() {
        let interrupt = Interrupt::default();
        let out = interrupt
            .output(Command::new("sh").args(["-c", "echo hi; echo err >&2"]))
            .unwrap()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }
}
