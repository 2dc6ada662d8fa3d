//! The metrics endpoint end to end, on 127.0.0.1 only: a tiny `ard-actors`
//! pipeline of mock stages plus `TrainMetrics` on one registry, served by the
//! actix server; a minimal HTTP/1.1 client on `TcpStream` checks `/metrics`,
//! `/healthz`, `/status`, 405 and 404, a taken port, prompt shutdown, the
//! canonical name list (every name exported with the `run` label), and the
//! exposition against `promtool check metrics` (required when `CI` is set).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ard_actors::compliance::check_stage_metrics;
use ard_actors::{Emitter, Message, PipelineBuilder, PipelineOptions, Source, Stage, StageError};
use ard_pipeline::metrics::names::{self, MetricKind};
use ard_pipeline::metrics::{
    self, MetricsError, Phase, PipelineStatus, Status, StatusSource, TrainMetrics,
};
use prometheus::proto::MetricType;
use prometheus::Registry;

const RUN: &str = "metrics-http-test";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- mock stages

struct Batch(u64);

impl Message for Batch {
    fn images(&self) -> u64 {
        self.0
    }
}

struct Data {
    left: u32,
}

impl Source for Data {
    type Out = Batch;
    fn name(&self) -> &str {
        "data"
    }
    fn produce(&mut self) -> Result<Option<Batch>, StageError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        Ok(Some(Batch(8)))
    }
}

/// The "attack": passes batches on and records training metrics as a real
/// stage would, from a clone of the handles.
struct Attack {
    metrics: TrainMetrics,
}

impl Stage for Attack {
    type In = Batch;
    type Out = Batch;
    fn name(&self) -> &str {
        "attack"
    }
    fn handle(&mut self, msg: Batch, out: &mut Emitter<Batch>) -> Result<(), StageError> {
        self.metrics.inc_gradient_steps("pgd", 2);
        self.metrics.cache_hit(msg.0);
        self.metrics.set_weight_staleness(0);
        out.send(msg)
    }
}

struct Student {
    metrics: TrainMetrics,
}

impl Stage for Student {
    type In = Batch;
    type Out = ();
    fn name(&self) -> &str {
        "student"
    }
    fn handle(&mut self, _msg: Batch, _out: &mut Emitter<()>) -> Result<(), StageError> {
        self.metrics.inc_train_steps(1);
        self.metrics.set_loss(1.25);
        self.metrics.set_lr(0.1);
        Ok(())
    }
}

/// A registry holding a finished pipeline's metrics and `TrainMetrics`, and the
/// status source attached to it.
fn finished_run() -> (Registry, Arc<PipelineStatus>) {
    let registry = Registry::new();
    let train = TrainMetrics::register(&registry, RUN, &["pgd"], &["natural", "pgd20"])
        .expect("train metrics");
    train.set_epoch(1);
    let options = PipelineOptions {
        const_labels: metrics::const_labels(RUN),
        ..PipelineOptions::default()
    };
    let status = Arc::new(PipelineStatus::new(train.clone(), registry.clone()));
    let handle = PipelineBuilder::new(&registry, options)
        .and_then(|builder| builder.source(Data { left: 6 }, 2))
        .and_then(|chain| {
            chain.stage(
                Attack {
                    metrics: train.clone(),
                },
                2,
            )
        })
        .and_then(|chain| {
            chain.sink(Student {
                metrics: train.clone(),
            })
        })
        .and_then(|builder| builder.run())
        .expect("pipeline runs");
    status.attach(handle.stats_reader());
    handle.join().expect("pipeline completes");
    train.record_eval(1, 6, &[("natural", 80.5), ("pgd20", 49.0)]);
    status.set_phase(Phase::Finished);
    (registry, status)
}

// ------------------------------------------------------------- a tiny client

struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request with `Connection: close`, bounded by `IO_TIMEOUT`.
fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8(raw.to_vec()).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn start_server(registry: Registry, status: Arc<dyn StatusSource>) -> metrics::ServerHandle {
    metrics::start("127.0.0.1:0", registry, status)
        .expect("server starts")
        .expect("enabled")
}

// ---------------------------------------------------------------------- tests

#[test]
fn serves_metrics_healthz_and_status() {
    let (registry, status) = finished_run();
    let server = start_server(registry, status);
    let addr = server.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let response = request(addr, "GET", "/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4")
    );
    for metric in names::ALL {
        assert!(
            response
                .body
                .contains(&format!("# TYPE {} {}", metric.name, metric.kind.as_str())),
            "{} missing from /metrics:\n{}",
            metric.name,
            response.body
        );
    }
    assert!(response.body.contains(&format!(
        "ard_attack_gradient_steps_total{{attack=\"pgd\",run=\"{RUN}\"}} 12"
    )));
    assert!(response.body.contains(&format!(
        "ard_eval_accuracy{{attack=\"pgd20\",run=\"{RUN}\"}} 49"
    )));

    let response = request(addr, "GET", "/healthz");
    assert_eq!((response.status, response.body.as_str()), (200, "ok"));

    let response = request(addr, "GET", "/status");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let status: Status = serde_json::from_str(&response.body).expect("status JSON");
    assert_eq!(status.run, RUN);
    assert_eq!(status.phase, Phase::Finished);
    assert_eq!((status.epoch, status.step), (1, 6));
    assert_eq!(status.loss, Some(1.25));
    assert_eq!((status.cache_hits, status.cache_misses), (48, 0));
    let stages: Vec<&str> = status.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["data", "attack", "student"]);
    assert!(status
        .stages
        .iter()
        .all(|s| s.images == 48 && s.batches == 6));
    assert!(status
        .stages
        .iter()
        .all(|s| s.images_per_s > 0.0 && (0.0..=1.0).contains(&s.busy_share)));
    let queues: Vec<&str> = status.queues.iter().map(|q| q.queue.as_str()).collect();
    assert_eq!(queues, ["data_to_attack", "attack_to_student"]);
    let eval = status.last_eval.expect("last eval");
    assert_eq!((eval.epoch, eval.step), (1, 6));
    assert_eq!(eval.accuracy_pct["natural"], 80.5);
    assert!(
        !response.body.contains('/'),
        "no paths in /status: {}",
        response.body
    );

    for (method, path) in [
        ("POST", "/metrics"),
        ("PUT", "/healthz"),
        ("DELETE", "/status"),
    ] {
        let response = request(addr, method, path);
        assert_eq!(response.status, 405, "{method} {path}");
        assert_eq!(
            response.headers.get("allow").map(String::as_str),
            Some("GET, HEAD")
        );
    }
    // HEAD answers as GET would, without a body.
    for path in ["/metrics", "/healthz", "/status"] {
        let response = request(addr, "HEAD", path);
        assert_eq!(response.status, 200, "HEAD {path}");
        assert!(response.body.is_empty(), "HEAD {path}: {}", response.body);
    }
    let response = request(addr, "GET", "/../../etc/passwd");
    assert_eq!(response.status, 404);
    let response = request(addr, "GET", "/");
    assert_eq!(response.status, 404);
    assert!(response.body.contains("/metrics"));

    server.shutdown().expect("clean shutdown");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn every_canonical_metric_is_exported_with_the_run_label() {
    let (registry, _status) = finished_run();
    if let Err(problems) = check_stage_metrics(
        &registry,
        &["data", "attack", "student"],
        &["data_to_attack", "attack_to_student"],
    ) {
        panic!("stage metrics incomplete:\n{}", problems.join("\n"));
    }
    let families = registry.gather();
    for metric in names::ALL {
        let family = families
            .iter()
            .find(|family| family.name() == metric.name)
            .unwrap_or_else(|| panic!("{} is not registered", metric.name));
        assert_eq!(family.help(), metric.help, "{}", metric.name);
        let kind = match metric.kind {
            MetricKind::Counter => MetricType::COUNTER,
            MetricKind::Gauge => MetricType::GAUGE,
        };
        assert_eq!(family.get_field_type(), kind, "{}", metric.name);
        assert!(!family.get_metric().is_empty(), "{}", metric.name);
        for sample in family.get_metric() {
            let mut labels: Vec<&str> = sample.get_label().iter().map(|l| l.name()).collect();
            labels.sort_unstable();
            let mut expected: Vec<&str> = metric.labels.to_vec();
            expected.push(names::RUN_LABEL);
            expected.sort_unstable();
            assert_eq!(labels, expected, "labels of {}", metric.name);
            assert!(
                sample
                    .get_label()
                    .iter()
                    .any(|l| l.name() == names::RUN_LABEL && l.value() == RUN),
                "{} lacks run=\"{RUN}\"",
                metric.name
            );
        }
    }
    // Nothing exported that is not in the canonical list.
    for family in &families {
        assert!(
            names::lookup(family.name()).is_some(),
            "{} is exported but not in names::ALL",
            family.name()
        );
    }
}

#[test]
fn a_taken_port_is_a_clear_error_naming_the_address() {
    let first = start_server(Registry::new(), Arc::new(Status::default));
    let listen = first.addr().to_string();
    let error = metrics::start(&listen, Registry::new(), Arc::new(Status::default))
        .expect_err("port is taken");
    let message = error.to_string();
    assert!(message.contains(&listen), "{message}");
    assert!(message.contains("metrics.listen"), "{message}");
    match error {
        MetricsError::Bind { cause, .. } => {
            assert_eq!(cause.kind(), std::io::ErrorKind::AddrInUse)
        }
        other => panic!("expected a bind error, got {other:?}"),
    }
    // The first server is unaffected.
    assert_eq!(request(first.addr(), "GET", "/healthz").status, 200);
    first.shutdown().expect("shutdown");
}

#[test]
fn shutdown_is_prompt_even_with_an_idle_keep_alive_connection() {
    let server = start_server(Registry::new(), Arc::new(Status::default));
    let addr = server.addr();
    // A keep-alive connection that stays open and idle, as a scraper's would.
    let mut idle = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    idle.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut buffer = [0u8; 512];
    let read = idle.read(&mut buffer).expect("response");
    assert!(String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 200"));

    let started = Instant::now();
    server.shutdown().expect("shutdown");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    drop(idle);
}

#[test]
fn exposition_passes_promtool() {
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("promtool is not installed (Debian package `prometheus`); CI must install it");
        }
        eprintln!(
            "\n!!!!! SKIPPED exposition_passes_promtool: promtool is not installed \
             (apt-get install prometheus) !!!!!\n"
        );
        return;
    }
    let (registry, status) = finished_run();
    let server = start_server(registry, status);
    let body = request(server.addr(), "GET", "/metrics").body;
    server.shutdown().expect("shutdown");

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool output");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- exposition ---\n{body}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
