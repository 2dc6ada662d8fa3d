//! The input side of a stage: receives from the upstream queue, measures idle time
//! (including a wait cut short by cancellation),
//! and tells end of stream apart from cancellation.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, TryRecvError};
use prometheus::IntGauge;

use crate::cancel::CancelToken;
use crate::error::StageError;

pub(crate) struct Inbox<T> {
    rx: Receiver<T>,
    depth: IntGauge,
    cancel: CancelToken,
    /// Time spent waiting on the empty queue since the last `take_idle`.
    idle: Duration,
}

impl<T> Inbox<T> {
    pub(crate) fn new(rx: Receiver<T>, depth: IntGauge, cancel: CancelToken) -> Self {
        Self {
            rx,
            depth,
            cancel,
            idle: Duration::ZERO,
        }
    }

    /// The next message; `Ok(None)` once the upstream closed the queue and it is
    /// drained; [`StageError::cancelled`] once the pipeline is cancelled.
    ///
    /// An upstream that fails cancels the pipeline before closing its queue, so a
    /// closed queue seen while not cancelled is a genuine end of stream.
    pub(crate) fn recv(&mut self) -> Result<Option<T>, StageError> {
        if self.cancel.is_cancelled() {
            return Err(StageError::cancelled());
        }
        match self.rx.try_recv() {
            Ok(msg) => return Ok(Some(self.received(msg))),
            Err(TryRecvError::Disconnected) => return self.closed(),
            Err(TryRecvError::Empty) => {}
        }
        let started = Instant::now();
        let mut select = Select::new();
        let recv_index = select.recv(&self.rx);
        select.recv(self.cancel.signal());
        let operation = select.select();
        self.idle += started.elapsed();
        if operation.index() == recv_index {
            match operation.recv(&self.rx) {
                Ok(msg) => Ok(Some(self.received(msg))),
                Err(_) => self.closed(),
            }
        } else {
            let _ = operation.recv(self.cancel.signal());
            Err(StageError::cancelled())
        }
    }

    /// The idle time recorded since the last call, resetting it.
    pub(crate) fn take_idle(&mut self) -> Duration {
        std::mem::take(&mut self.idle)
    }

    fn received(&self, msg: T) -> T {
        self.depth
            .set(i64::try_from(self.rx.len()).unwrap_or(i64::MAX));
        msg
    }

    fn closed(&self) -> Result<Option<T>, StageError> {
        if self.cancel.is_cancelled() {
            Err(StageError::cancelled())
        } else {
            Ok(None)
        }
    }
}
