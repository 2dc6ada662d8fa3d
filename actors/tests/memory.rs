//! Fault injection, slow consumer: with a sink far slower than its source and
//! big messages, the bounded queues keep memory flat — resident memory stops
//! growing once the queues are full, instead of buffering the whole stream.
//! (One test in this binary: it measures the whole process.)

mod common;

use std::time::{Duration, Instant};

use ard_actors::{Emitter, Message, Source, Stage, StageError};
use common::{builder, start};

const MESSAGE_BYTES: usize = 8 << 20;

/// A batch of `MESSAGE_BYTES` bytes, every page touched (so it is resident).
struct Big(Vec<u8>);

impl Message for Big {
    fn images(&self) -> u64 {
        1
    }
}

struct Endless;

impl Source for Endless {
    type Out = Big;
    fn name(&self) -> &str {
        "data"
    }
    fn produce(&mut self) -> Result<Option<Big>, StageError> {
        Ok(Some(Big(vec![1u8; MESSAGE_BYTES])))
    }
}

struct Slow;

impl Stage for Slow {
    type In = Big;
    type Out = ();
    fn name(&self) -> &str {
        "eval"
    }
    fn handle(&mut self, msg: Big, _out: &mut Emitter<()>) -> Result<(), StageError> {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(msg.0[MESSAGE_BYTES - 1], 1);
        Ok(())
    }
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
fn a_slow_consumer_keeps_memory_flat() {
    let handle = start(builder(), Endless, 2, Slow);
    // Let the queue fill, then watch: the source could make a message every
    // few milliseconds, the sink takes one every 50 ms.
    std::thread::sleep(Duration::from_millis(500));
    let settled = rss_bytes();
    let started = Instant::now();
    let mut peak = settled;
    while started.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(25));
    }
    handle.cancel();
    let _ = handle.join();
    let growth = peak.saturating_sub(settled);
    // Unbounded, 3 s would buffer hundreds of 8 MB messages; bounded, at most a
    // few are in flight at once.
    assert!(
        growth <= 6 * MESSAGE_BYTES,
        "resident memory grew by {} MB while the queue was full (settled at {} MB)",
        growth >> 20,
        settled >> 20
    );
}
