//! The control plane's HTTP endpoint, on actix-web:
//!
//! - `GET /metrics`: the registry in the Prometheus text format
//!   (`text/plain; version=0.0.4`);
//! - `GET /healthz`: `200 ok` while the server runs;
//! - `GET /status`: the [`Status`](super::Status) JSON document.
//!
//! HEAD gets the GET headers without a body; other methods get `405` (with
//! `Allow: GET, HEAD`), other paths `404`. Nothing but
//! the run name identifies the run: no file paths are exposed.
//!
//! [`start`] binds the address synchronously, on the caller's thread, so a taken
//! port is a clear [`MetricsError::Bind`] naming the address and the config key
//! `metrics.listen`; port 0 picks a free port ([`ServerHandle::addr`] tells which).
//! The server then runs on its own thread with its own actix `System`, with
//! actix's signal handling disabled: the pipeline owns SIGINT and SIGTERM (see
//! [`signals`](super::signals)). [`ServerHandle::shutdown`] stops it gracefully
//! and joins its thread, in bounded time.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::{Encoder, Registry, TextEncoder};

use super::error::MetricsError;
use super::status::StatusSource;

/// Seconds actix waits for requests in flight when stopping.
const GRACEFUL_STOP_S: u64 = 1;
/// How long `start` waits for the server thread to come up.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for the server thread to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The log filter directives for `level` (the `--log-level` value) with
/// actix's own lines kept in their place: its server's start-up lines only
/// from `warn`, and its HTTP layer's complaints about malformed requests
/// (`stream error: ...`, logged as errors although they are the client's
/// fault) only when debugging.
pub fn log_filters(level: &str) -> String {
    let debugging = ["debug", "trace"].iter().any(|l| level.contains(l));
    let http = if debugging { "debug" } else { "off" };
    format!("{level},actix_server=warn,actix_http={http}")
}

/// What the handlers share.
struct AppState {
    registry: Registry,
    status: Arc<dyn StatusSource>,
}

/// A running endpoint. Dropping it shuts the server down too (ignoring errors);
/// call [`shutdown`](Self::shutdown) to see them.
pub struct ServerHandle {
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts the endpoint on `listen` (the value of `metrics.listen`), serving
/// `registry` and `status`. An empty `listen` disables it: `Ok(None)`.
pub fn start(
    listen: &str,
    registry: Registry,
    status: Arc<dyn StatusSource>,
) -> Result<Option<ServerHandle>, MetricsError> {
    let listen = listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().map_err(|_| MetricsError::InvalidAddress {
        value: listen.to_owned(),
    })?;
    start_at(addr, registry, status).map(Some)
}

/// Starts the endpoint on `addr` (port 0: any free port).
pub fn start_at(
    addr: SocketAddr,
    registry: Registry,
    status: Arc<dyn StatusSource>,
) -> Result<ServerHandle, MetricsError> {
    let bind_error = |cause| MetricsError::Bind {
        addr: addr.to_string(),
        cause,
    };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let server_error = |message: String| MetricsError::Server {
        addr: bound.to_string(),
        message,
    };
    let state = web::Data::new(AppState { registry, status });
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ard-metrics-http".to_owned())
        .spawn(move || {
            let system = actix_rt::System::new();
            let result = system.block_on(async move {
                let server = HttpServer::new(move || app(state.clone()))
                    .workers(1)
                    .disable_signals()
                    .shutdown_timeout(GRACEFUL_STOP_S)
                    .listen(listener);
                let server = match server {
                    Ok(server) => server.run(),
                    Err(error) => {
                        let _ = started_tx.send(Err(error.to_string()));
                        return Ok(());
                    }
                };
                let _ = started_tx.send(Ok(server.handle()));
                server.await
            });
            if let Err(error) = result {
                log::error!("metrics endpoint on {bound}: {error}");
            }
            let _ = done_tx.send(());
        })
        .map_err(|error| server_error(format!("cannot spawn its thread: {error}")))?;
    let server = match started_rx.recv_timeout(START_WAIT) {
        Ok(Ok(server)) => server,
        Ok(Err(message)) => {
            let _ = thread.join();
            return Err(server_error(message));
        }
        Err(_) => {
            return Err(server_error(format!(
                "did not start within {} s",
                START_WAIT.as_secs()
            )))
        }
    };
    log::info!("metrics endpoint on http://{bound}/metrics (also /healthz, /status)");
    Ok(ServerHandle {
        addr: bound,
        server,
        done: done_rx,
        thread: Some(thread),
    })
}

impl ServerHandle {
    /// The address the server listens on (the actual port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server gracefully (requests in flight get up to a second) and
    /// joins its thread; gives up, leaving the thread detached, after 5 s.
    pub fn shutdown(mut self) -> Result<(), MetricsError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MetricsError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // The command is sent when `stop` is called; its future only awaits the
        // completion, which the wait below observes instead.
        drop(self.server.stop(true));
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                thread.join().map_err(|_| MetricsError::Server {
                    addr: self.addr.to_string(),
                    message: "its thread panicked".to_owned(),
                })?;
                log::debug!("metrics endpoint on {} stopped", self.addr);
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(MetricsError::Server {
                addr: self.addr.to_string(),
                message: format!(
                    "did not stop within {} s; its thread is left detached",
                    STOP_WAIT.as_secs()
                ),
            }),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            log::warn!("{error}");
        }
    }
}

/// The application: three GET (and HEAD) resources, 405 for other methods, 404 elsewhere.
fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .service(get_only("/metrics", metrics))
        .service(get_only("/healthz", healthz))
        .service(get_only("/status", status))
        .default_service(web::to(not_found))
}

/// `path` answers GET with `handler`, HEAD with its headers (actix sends no
/// body for HEAD), and 405 to anything else.
fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(body),
        Err(error) => {
            log::error!("encoding /metrics: {error}");
            HttpResponse::InternalServerError()
                .content_type(TEXT)
                .body(format!("cannot encode metrics: {error}\n"))
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type(TEXT).body("ok")
}

async fn status(state: web::Data<AppState>) -> HttpResponse {
    match serde_json::to_string(&state.status.status()) {
        Ok(body) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        Err(error) => HttpResponse::InternalServerError()
            .content_type(TEXT)
            .body(format!("cannot encode status: {error}\n")),
    }
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, "GET, HEAD"))
        .content_type(TEXT)
        .body("method not allowed: use GET\n")
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type(TEXT)
        .body("not found; endpoints: /metrics /healthz /status\n")
}

const TEXT: &str = "text/plain; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Status;

    fn source() -> Arc<dyn StatusSource> {
        Arc::new(Status::default)
    }

    #[test]
    fn empty_listen_disables_and_bad_listen_names_the_key() {
        let disabled = start("", Registry::new(), source()).expect("disabled");
        assert!(disabled.is_none());
        let error = start("localhost", Registry::new(), source()).expect_err("not an address");
        let message = error.to_string();
        assert!(message.contains("metrics.listen"), "{message}");
        assert!(message.contains("\"localhost\""), "{message}");
    }

    #[test]
    fn drop_stops_the_server() {
        let handle = start_at(
            "127.0.0.1:0".parse().expect("addr"),
            Registry::new(),
            source(),
        )
        .expect("start");
        let addr = handle.addr();
        assert_ne!(addr.port(), 0);
        drop(handle);
        // The port is free again: binding it succeeds.
        TcpListener::bind(addr).expect("port released after drop");
    }
}
