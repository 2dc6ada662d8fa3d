//! The main job (`ard-pipeline --config FILE`): open the run folder, start
//! the metrics, the HTTP endpoint and signal handling, train on the chosen
//! [`Engine`], and finish the folder with the [`Summary`].

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{self, Phase, PipelineStatus, Signal, TrainMetrics};
use crate::train::{self, Engine, Job, Summary};
use ard_actors::CancelToken;
use std::sync::Arc;
use std::time::Instant;

/// How the job ended when it did not fail.
#[derive(Debug)]
pub enum JobEnd {
    Finished(Summary),
    /// Stopped by a signal after checkpointing; exit with `signal.exit_code()`.
    Interrupted(Signal),
}

/// The run's metrics, with the step counter continuing from `checkpoint`.
fn register_metrics(
    cfg: &Config,
    registry: &prometheus::Registry,
    checkpoint: Option<&train::resume::Checkpoint>,
) -> Result<TrainMetrics> {
    let attack_label = cfg.attack.build().name();
    let eval_names: Vec<&str> = cfg.eval.attacks.iter().map(String::as_str).collect();
    let train_metrics = TrainMetrics::register(
        registry,
        &cfg.run.name,
        &[attack_label.as_str()],
        &eval_names,
    )?;
    if let Some(c) = checkpoint {
        // The step counter (/status, progress, Prometheus) continues from the checkpoint.
        train_metrics.inc_train_steps(c.state.position.step as u64);
    }
    Ok(train_metrics)
}

/// The progress bar of `cfg`'s run.
fn progress(cfg: &Config, train_metrics: &TrainMetrics) -> crate::report::progress::Progress {
    let train_images = crate::data::validation::train_images(&cfg.data);
    crate::report::progress::Progress::start(
        train_metrics.clone(),
        train::context::total_steps(cfg, train_images),
        train_images.div_ceil(cfg.data.batch_size),
        cfg.train.epochs,
        cfg.data.batch_size,
    )
}

/// Runs the whole job as configured, on `engine`.
pub fn run_job(cfg: &Config, engine: &dyn Engine) -> Result<JobEnd> {
    let started = Instant::now();
    let (folder, checkpoint) = train::resume::open_run(cfg)?;
    let wall_before = checkpoint.as_ref().map_or(0.0, |c| c.state.wall_s);
    log::info!("run folder {}", folder.path.display());
    let registry = prometheus::Registry::new();
    let train_metrics = register_metrics(cfg, &registry, checkpoint.as_ref())?;
    let status = Arc::new(PipelineStatus::new(train_metrics.clone(), registry.clone()));
    let server = metrics::start(&cfg.metrics.listen, registry.clone(), status.clone())?;
    if let Some(server) = &server {
        log::info!(
            "metrics on http://{}/metrics (status: /status)",
            server.addr()
        );
    }
    // One token stops either engine: a signal cancels it, even during setup.
    let cancel = CancelToken::new();
    let signals = {
        let cancel = cancel.clone();
        metrics::install(move |signal| {
            log::warn!("{}: finishing the current step, checkpointing, then exiting (again to exit at once)", signal.name());
            cancel.cancel();
        })?
    };
    let progress = progress(cfg, &train_metrics);
    let job = Job {
        folder: Some(&folder),
        resume: checkpoint.as_ref(),
        metrics: Some(&train_metrics),
        registry: Some(&registry),
        cancel: Some(&cancel),
        on_start: Some(Box::new(|stats| match stats {
            Some(stats) => status.attach(stats),
            None => status.set_phase(Phase::Running),
        })),
        ..Job::new(cfg)
    };
    let result = engine.train(job);
    progress.finish();
    status.set_phase(match &result {
        Err(Error::Cancelled) => Phase::Stopping,
        _ => Phase::Finished,
    });
    if let Some(server) = server {
        if let Err(e) = server.shutdown() {
            log::warn!("metrics endpoint shutdown: {e}");
        }
    }
    let signal = signals.received();
    drop(signals);
    match result {
        Ok(trained) => {
            let wall_s = wall_before + started.elapsed().as_secs_f64();
            let summary = Summary::of(cfg, engine.name(), &trained, wall_s);
            folder.finish(&summary)?;
            Ok(JobEnd::Finished(summary))
        }
        Err(Error::Cancelled) => match signal {
            Some(signal) => Ok(JobEnd::Interrupted(signal)),
            None => Err(Error::Cancelled),
        },
        Err(e) => Err(e),
    }
}
