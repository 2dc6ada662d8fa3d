//! A malformed request to the metrics endpoint is the client's fault: under
//! the run's log filters (`--log-level info`) actix writes no line about it
//! into the run's log; with `--log-level debug` it does. The server listens
//! on a free port of 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ard_pipeline::metrics::{self, PipelineStatus, TrainMetrics};
use prometheus::Registry;

/// Keeps the lines that each of two filters lets through.
struct Capture {
    quiet: env_logger::Logger,
    debug: env_logger::Logger,
    lines: Arc<Mutex<(Vec<String>, Vec<String>)>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        let mut lines = self.lines.lock().unwrap();
        if self.quiet.matches(record) {
            lines.0.push(line.clone());
        }
        if self.debug.matches(record) {
            lines.1.push(line);
        }
    }

    fn flush(&self) {}
}

fn logger(level: &str) -> env_logger::Logger {
    env_logger::Builder::new()
        .parse_filters(&metrics::server::log_filters(level))
        .build()
}

#[test]
fn malformed_requests_leave_no_error_in_the_run_log() {
    let lines = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    log::set_boxed_logger(Box::new(Capture {
        quiet: logger("info"),
        debug: logger("debug"),
        lines: lines.clone(),
    }))
    .unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    let registry = Registry::new();
    let train = TrainMetrics::register(&registry, "quiet", &["pgd"], &["natural"]).unwrap();
    let status = Arc::new(PipelineStatus::new(train, registry.clone()));
    let server = metrics::start("127.0.0.1:0", registry, status)
        .unwrap()
        .unwrap();
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(garbage).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    }
    server.shutdown().unwrap();

    let (quiet, debug) = lines.lock().unwrap().clone();
    assert!(
        debug.iter().any(|l| l.contains("actix_http")),
        "the malformed requests were not logged at all, so this test shows nothing: {debug:?}"
    );
    let actix: Vec<&String> = quiet.iter().filter(|l| l.contains("actix")).collect();
    assert!(actix.is_empty(), "{actix:?}");
}
