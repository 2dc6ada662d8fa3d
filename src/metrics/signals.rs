//! SIGINT and SIGTERM: the pipeline owns them (actix's own handling is off).
//!
//! [`install`] arms a two-stage handler, on `signal-hook`:
//!
//! 1. the **first** SIGINT or SIGTERM is recorded ([`SignalGuard::received`]) and
//!    the callback runs (on a dedicated thread, not in the signal handler): the
//!    pipeline cancels its `ard_actors::CancelToken`, drains, flushes, and exits
//!    with [`Signal::exit_code`] (130 for SIGINT, 143 for SIGTERM);
//! 2. a **second** one exits the process at once, inside the signal handler
//!    (`_exit`, async-signal-safe), with the exit code of that second signal.
//!    Nothing is corrupted: checkpoints and caches are written to a temporary
//!    file and renamed into place, so an interrupted write leaves the old file.
//!
//! Only one [`SignalGuard`] lives at a time: installing again while one is alive
//! is an error, not a panic. Dropping the guard disarms the callback; from then
//! on a SIGINT or SIGTERM exits at once (with 130 or 143), as the default
//! disposition would, until the next `install`. The OS-level hooks are registered
//! on the first `install` and stay for the life of the process.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::error::MetricsError;

/// A termination signal the pipeline handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, Kubernetes, Ray stopping a job).
    Terminate,
}

impl Signal {
    /// Both, in a fixed order.
    pub const ALL: [Signal; 2] = [Signal::Interrupt, Signal::Terminate];

    /// The conventional exit code after this signal: 128 + its number (130 for
    /// SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> i32 {
        128 + self.number()
    }

    /// `"SIGINT"` or `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            Signal::Interrupt => SIGINT,
            Signal::Terminate => SIGTERM,
        }
    }

    /// The signal numbered `number`, if it is one of the two.
    pub fn from_number(number: i32) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.number() == number)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

type Callback = Box<dyn FnOnce(Signal) + Send + 'static>;

/// The state of one `install`, shared by its guard and the dispatch thread.
struct Active {
    /// 0 until the first signal, then its number.
    received: AtomicI32,
    callback: Mutex<Option<Callback>>,
}

/// The process-wide state.
struct State {
    /// Whether the OS-level hooks are registered (once per process).
    hooked: bool,
    /// When true, the next SIGINT/SIGTERM exits at once. Set by the signal
    /// handler itself on every signal, and while no guard is alive.
    armed: Arc<AtomicBool>,
    active: Option<Arc<Active>>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Proof that the handlers are installed; see the module docs. Dropping it
/// disarms the callback.
pub struct SignalGuard {
    active: Arc<Active>,
}

impl SignalGuard {
    /// The first signal received since `install`, if any.
    pub fn received(&self) -> Option<Signal> {
        Signal::from_number(self.active.received.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for SignalGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalGuard")
            .field("received", &self.received())
            .finish()
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = state.as_mut() {
            if state
                .active
                .as_ref()
                .is_some_and(|active| Arc::ptr_eq(active, &self.active))
            {
                state.active = None;
                state.armed.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Installs the two-stage SIGINT/SIGTERM handler: `on_first` runs once, on the
/// first signal (on the signal thread; keep it short, e.g. cancel a token); a
/// second signal exits at once. Fails if a [`SignalGuard`] is alive already or
/// the OS refuses a handler.
pub fn install(
    on_first: impl FnOnce(Signal) + Send + 'static,
) -> Result<SignalGuard, MetricsError> {
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let state = guard.get_or_insert_with(|| State {
        hooked: false,
        armed: Arc::new(AtomicBool::new(true)),
        active: None,
    });
    if state.active.is_some() {
        return Err(MetricsError::SignalsAlreadyInstalled);
    }
    if !state.hooked {
        hook(&state.armed)?;
        state.hooked = true;
    }
    let active = Arc::new(Active {
        received: AtomicI32::new(0),
        callback: Mutex::new(Some(Box::new(on_first))),
    });
    state.active = Some(active.clone());
    state.armed.store(false, Ordering::SeqCst);
    Ok(SignalGuard { active })
}

/// Registers, for each signal, "exit if armed" then "arm" (in that order, so the
/// first signal arms and the second exits), and the thread that runs callbacks.
/// On error, unregisters what it registered.
fn hook(armed: &Arc<AtomicBool>) -> Result<(), MetricsError> {
    let mut registered = Vec::new();
    let result = (|| {
        for signal in Signal::ALL {
            let error = |cause| MetricsError::SignalInstall {
                signal: signal.name(),
                cause,
            };
            registered.push(
                signal_hook::flag::register_conditional_shutdown(
                    signal.number(),
                    signal.exit_code(),
                    armed.clone(),
                )
                .map_err(error)?,
            );
            registered
                .push(signal_hook::flag::register(signal.number(), armed.clone()).map_err(error)?);
        }
        let mut signals = Signals::new(Signal::ALL.map(Signal::number)).map_err(|cause| {
            MetricsError::SignalInstall {
                signal: "SIGINT/SIGTERM",
                cause,
            }
        })?;
        let handle = signals.handle();
        let spawned = std::thread::Builder::new()
            .name("ard-signals".to_owned())
            .spawn(move || {
                for number in signals.forever() {
                    if let Some(signal) = Signal::from_number(number) {
                        dispatch(signal);
                    }
                }
            });
        if let Err(cause) = spawned {
            handle.close();
            return Err(MetricsError::SignalInstall {
                signal: "SIGINT/SIGTERM",
                cause,
            });
        }
        Ok(())
    })();
    if result.is_err() {
        for id in registered {
            signal_hook::low_level::unregister(id);
        }
    }
    result
}

/// Runs on the signal thread: records the first signal of the live guard and
/// calls its callback (outside the lock, panics caught).
fn dispatch(signal: Signal) {
    let active = {
        let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        state.as_ref().and_then(|state| state.active.clone())
    };
    let Some(active) = active else {
        return;
    };
    let first = active
        .received
        .compare_exchange(0, signal.number(), Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if !first {
        return;
    }
    log::warn!("{signal} received: stopping (a second SIGINT or SIGTERM exits at once)");
    let callback = active
        .callback
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(callback) = callback {
        if catch_unwind(AssertUnwindSafe(|| callback(signal))).is_err() {
            log::error!("the {signal} callback panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_names() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Terminate.to_string(), "SIGTERM");
        assert_eq!(Signal::from_number(SIGINT), Some(Signal::Interrupt));
        assert_eq!(Signal::from_number(9), None);
        for signal in Signal::ALL {
            assert_eq!(Signal::from_number(signal.number()), Some(signal));
        }
        assert_eq!(Signal::from_number(0), None);
    }
}
