//! `ard-pipeline`: the command-line entry point. Errors are printed with their
//! cause chain and turned into exit codes; no panic reaches the user for bad input.

#![warn(clippy::too_many_lines)]

mod cli;

use anyhow::{bail, Result};
use ard_pipeline::config::{self, Config, ResumePolicy};
use ard_pipeline::deploy;
use ard_pipeline::engines::{Pipeline, Sequential};
use ard_pipeline::eval::{self, EvalAttack};
use ard_pipeline::models::Arch;
use ard_pipeline::report::plural::count;
use ard_pipeline::run::{run_job, JobEnd};
use ard_pipeline::train;
use ard_pipeline::train::Engine;
use clap::Parser;
use cli::{
    Cli, Command, DataAction, EvalAction, EvalArgs, ExportArgs, RunArgs, SoftLabelsAction,
    SoftLabelsArgs,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&ard_pipeline::metrics::server::log_filters(&cli.log_level))
        .format_timestamp_secs()
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // A cause whose text the line above already ends with (an I/O
            // error after its path) is not printed a second time.
            let mut above = err.to_string();
            eprintln!("error: {above}");
            for cause in err.chain().skip(1) {
                let line = cause.to_string();
                if !above.ends_with(&line) {
                    eprintln!("  caused by: {line}");
                }
                above = line;
            }
            ExitCode::from(1)
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let Some(name) = path else {
        bail!("no --config given (e.g. --config configs/quickstart.toml)");
    };
    Ok(config::load(&config::find_config(name)?)?)
}

/// The `--config` file when one is given, else the built-in defaults with
/// the environment overrides.
fn config_or_defaults(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(_) => load_config(path),
        None => Ok(config::defaults_with_env()?),
    }
}

/// The subcommand's own `--config`, else the one given before the subcommand
/// (`ard-pipeline --config FILE eval ...`); both at once must agree.
fn config_path<'a>(cli: &'a Cli, own: &'a Option<PathBuf>) -> Result<Option<&'a Path>> {
    match (own.as_deref(), cli.config.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            bail!(
                "--config given twice ({} and {}): give it once",
                b.display(),
                a.display()
            )
        }
        (own, top) => Ok(own.or(top)),
    }
}

/// Refuses the default run's flags before a subcommand, where they would be
/// ignored (`--config` is refused by the subcommands that take none).
fn check_top_level_flags(cli: &Cli) -> Result<()> {
    let Some(command) = &cli.command else {
        return Ok(());
    };
    let r = &cli.run;
    let given = [
        (r.engine != cli::Engine::Pipeline, "--engine"),
        (r.dry_run, "--dry-run"),
        (r.resume, "--resume"),
        (r.fresh, "--fresh"),
    ];
    if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
        bail!("{flag} before a subcommand does nothing; it belongs to the run: `ard-pipeline run {flag} ...`");
    }
    let takes_config = !matches!(
        command,
        Command::Report(_)
            | Command::Data(_)
            | Command::SweepRun(_)
            | Command::BenchRun(_)
            | Command::LatencyChild(_)
    );
    if cli.config.is_some() && !takes_config {
        bail!("--config does nothing for this subcommand; leave it out");
    }
    Ok(())
}

/// Exit code 0 (success) when `ok`, else 1.
fn exit_code(ok: bool) -> ExitCode {
    ExitCode::from(u8::from(!ok))
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    check_top_level_flags(&cli)?;
    match &cli.command {
        None => run(&load_config(cli.config.as_deref())?, &cli.run),
        Some(Command::Run(args)) => run(&load_config(config_path(&cli, &args.config)?)?, &args.run),
        Some(Command::Validate(args)) => validate_command(config_path(&cli, &args.config)?),
        Some(Command::Doctor(args)) => doctor_command(config_path(&cli, &args.config)?, args),
        Some(Command::SoftLabels(args)) => soft_labels_command(&cli, args),
        Some(Command::Data(args)) => match &args.action {
            DataAction::Fetch(f) => {
                ard_pipeline::data::download::fetch_into(&f.root, &f.url)?;
                println!("CIFAR-10 is in {}", f.root.display());
                Ok(ExitCode::SUCCESS)
            }
        },
        Some(Command::Sweep(args)) => sweep_command(config_path(&cli, &args.config)?, args),
        Some(Command::Report(args)) => report_command(&args.sweep_dir),
        Some(Command::SweepRun(args)) => sweep_run_command(args),
        Some(Command::ConfigReference) => {
            print!("{}", ard_pipeline::reference::page());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Bench(args)) => {
            bench_command(config_path(&cli, &args.config)?, args).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::BenchRun(args)) => {
            let side = args.side.parse().map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                ard_pipeline::bench::run_child(side, &args.run_config)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Eval(args)) => eval_command(&cli, args),
        Some(Command::Export(args)) => {
            export_command(config_or_defaults(config_path(&cli, &args.config)?)?, args)
        }
        Some(Command::LatencyChild(args)) => latency_child_command(args),
    }
}

/// `validate`: the config loads and passes every check; one line says what it trains.
fn validate_command(path: Option<&Path>) -> Result<ExitCode> {
    let cfg = load_config(path)?;
    println!(
        "ok: {} (student {}, attack {} x{}, loss {}, {})",
        path.unwrap_or(Path::new("")).display(),
        cfg.student.arch,
        config::spelled(&cfg.attack.kind),
        cfg.attack.steps,
        config::spelled(&cfg.loss.kind),
        count(cfg.train.epochs as u64, "epoch")
    );
    Ok(ExitCode::SUCCESS)
}

/// `sweep`: expands the grid and runs it on the chosen backend.
fn sweep_command(path: Option<&Path>, args: &cli::SweepArgs) -> Result<ExitCode> {
    use ard_pipeline::sweep::{self, Backend};
    let Some(path) = path else {
        bail!("no --config given (e.g. --config configs/paper/table2-cpu.toml)");
    };
    let path = config::find_config(path)?;
    let options = sweep::SweepOptions {
        backend: args.backend.map(Backend::from),
        fresh: args.fresh,
        dry_run: args.dry_run,
    };
    let outcome = sweep::run_sweep_with(&path, &options, |line| eprintln!("[sweep] {line}"))?;
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", outcome.summary());
    Ok(exit_code(outcome.failed().is_empty()))
}

/// `report`: report.md, report.csv and the plots of a sweep folder.
fn report_command(sweep_dir: &Path) -> Result<ExitCode> {
    ard_pipeline::sweep::report::check_sweep_folder(sweep_dir)?;
    let written = ard_pipeline::sweep::report::write_report(sweep_dir)?;
    println!(
        "{}: {}, {}, {}",
        count(written.rows.len() as u64, "row"),
        written.markdown.display(),
        written.csv.display(),
        written
            .plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `sweep-run`: one row of a sweep, by `--index` or a Kubernetes Indexed Job's index.
fn sweep_run_command(args: &cli::SweepRunArgs) -> Result<ExitCode> {
    let index = match args.index {
        Some(i) => i,
        None => match std::env::var("JOB_COMPLETION_INDEX") {
            Ok(v) => v
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("JOB_COMPLETION_INDEX={v:?} is not a row index"))?,
            Err(_) => bail!("no --index and no JOB_COMPLETION_INDEX"),
        },
    };
    let cfg =
        ard_pipeline::sweep::sweep_run(args.sweep.as_deref(), args.configs.as_deref(), index)?;
    run(&cfg, &args.run)
}

/// `latency-child`: one model's latency, measured in a process of its own.
fn latency_child_command(args: &cli::LatencyChildArgs) -> Result<ExitCode> {
    let arch = parse_arch(args.arch.as_deref())?;
    let opts = eval::edge::LatencyOptions {
        batch_sizes: args.batches.clone(),
        runs: args.runs,
        ..Default::default()
    };
    let report = deploy::latency_child(
        &args.model,
        arch,
        args.threads,
        &opts,
        args.onnxruntime.as_deref(),
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The architecture `--arch` names, if given.
fn parse_arch(name: Option<&str>) -> Result<Option<Arch>> {
    name.map(str::parse).transpose().map_err(anyhow::Error::msg)
}

fn run(cfg: &Config, args: &RunArgs) -> Result<ExitCode> {
    if args.dry_run {
        train::context::Setup::build(cfg)?;
        println!("dry run ok: config, data and models are usable");
        return Ok(ExitCode::SUCCESS);
    }
    let engine: &dyn Engine = match args.engine {
        cli::Engine::Pipeline => &Pipeline,
        cli::Engine::Sequential => &Sequential,
    };
    let mut cfg = cfg.clone();
    if args.resume {
        cfg.run.resume = ResumePolicy::Always;
    } else if args.fresh {
        cfg.run.resume = ResumePolicy::Never;
    }
    match run_job(&cfg, engine)? {
        JobEnd::Finished(report) => {
            print!("{}", report.table());
            Ok(ExitCode::SUCCESS)
        }
        JobEnd::Interrupted(signal) => {
            eprintln!(
                "interrupted by {}: checkpointed in {}; continue with --resume",
                signal.name(),
                cfg.run.out_dir.join(&cfg.run.name).display()
            );
            Ok(ExitCode::from(signal.exit_code() as u8))
        }
    }
}

fn doctor_command(path: Option<&Path>, args: &cli::DoctorArgs) -> Result<ExitCode> {
    use ard_pipeline::doctor;
    if let Some(json) = &args.json {
        doctor::check_json_path(json)?;
    }
    let path = path.map(config::find_config).transpose()?;
    let cfg = path.as_deref().map(config::load).transpose()?;
    let diagnosis = doctor::diagnose(path.as_deref().zip(cfg.as_ref()));
    print!("{}", diagnosis.text());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&diagnosis)?;
        ard_pipeline::atomic_file::write_text_atomic(path, &(text + "\n"))?;
    }
    Ok(exit_code(diagnosis.ok))
}

fn soft_labels_command(cli: &Cli, args: &SoftLabelsArgs) -> Result<ExitCode> {
    use ard_pipeline::soft_labels::command;
    match &args.action {
        Some(SoftLabelsAction::Merge(m)) => {
            let path = config_path(cli, &m.config)?;
            let cfg = path.map(|p| load_config(Some(p))).transpose()?;
            let report = command::merge(cfg.as_ref(), m.shards.clone(), m.output.clone())?;
            println!(
                "merged {} into {}: {}, {}",
                count(report.shards as u64, "shard"),
                report.output.display(),
                count(report.images as u64, "image"),
                count(report.entries as u64, "entry")
            );
        }
        None => {
            let cfg = load_config(config_path(cli, &args.config)?)?;
            // SIGINT/SIGTERM: save what is computed, release the lock, say so.
            let signals = ard_pipeline::metrics::install(|signal| {
                log::warn!("{}: saving the soft labels computed so far, then exiting (again to exit at once)", signal.name());
            })?;
            let report = command::fill(
                &cfg,
                args.shard,
                || signals.received().is_some(),
                |line| log::info!("{line}"),
            )?;
            println!("{}", report.summary());
            if let Some(signal) = signals.received().filter(|_| report.left > 0) {
                eprintln!(
                    "interrupted by {}: {} computed now saved in {}, {} left; run the same command again to continue",
                    signal.name(),
                    count(report.computed, "entry"),
                    report.path.display(),
                    report.left
                );
                return Ok(ExitCode::from(signal.exit_code() as u8));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_command(path: Option<&Path>, args: &cli::BenchArgs) -> Result<()> {
    use ard_pipeline::bench::{self, BenchPlan, TeacherSpec};
    let path = config::find_config(path.unwrap_or(Path::new("configs/bench.toml")))?;
    let soft_labels = parse_all(&args.soft_labels, "soft-labels", |s| match s {
        "online" => Ok(config::SoftLabels::Online),
        "cached" => Ok(config::SoftLabels::Cached),
        other => bail!("--soft-labels: unknown {other:?} (online, cached)"),
    })?;
    let base = config::load(&path)?;
    let device = ard_pipeline::device::resolve_device(&base.run.device)?;
    let plan = BenchPlan {
        device: ard_pipeline::device::device_name(device),
        base,
        teachers: parse_all(&args.teachers, "teachers", |t| {
            TeacherSpec::parse(t, args.batches).map_err(anyhow::Error::msg)
        })?,
        steps: args.steps.clone(),
        soft_labels,
        sides: parse_all(&args.sides, "sides", |s| {
            s.parse().map_err(anyhow::Error::msg)
        })?,
        variants: parse_all(&args.variants, "variants", |v| {
            v.parse().map_err(anyhow::Error::msg)
        })?,
        reps: args.reps,
        exe: std::env::current_exe()?,
        python: args.python.clone(),
        reference_script: args.reference_script.clone(),
        work_dir: args.work_dir.clone(),
    };
    let report = bench::run(&plan, |line| eprintln!("[bench] {line}"))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The items of a comma-separated flag `--what`, trimmed and parsed; an empty one is refused.
fn parse_all<T>(items: &[String], what: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    if items.iter().any(|i| i.trim().is_empty()) {
        bail!("--{what}: an empty item");
    }
    items.iter().map(|i| parse(i.trim())).collect()
}

fn export_command(mut cfg: Config, args: &ExportArgs) -> Result<ExitCode> {
    // Flags first: a wrong combination is refused before any data is fetched.
    let arch = args.arch.parse().map_err(anyhow::Error::msg)?;
    let robustbench = args.format == cli::ExportFormat::Robustbench;
    if robustbench && (args.int8 || args.onnxruntime.is_some()) {
        bail!("export --format robustbench: --int8 and --onnxruntime are for --format onnx");
    }
    if !robustbench && args.eval_json.is_some() {
        bail!("export --eval-json: only --format robustbench uses it");
    }
    if let Some(root) = &args.data_root {
        cfg.data.root = root.clone();
    }
    // The data before any export work: downloaded now if the config says so,
    // else refused at once with where to put the files.
    ard_pipeline::data::ensure_cifar10(&cfg.data)?;
    let cfg = &cfg;
    use deploy::interrupt::Interrupt;
    // SIGINT/SIGTERM end the child processes and stop the export; a second exits at once.
    let interrupt = Interrupt::default();
    let on_signal = interrupt.clone();
    let _signals = ard_pipeline::metrics::install(move |signal| on_signal.trigger(signal))?;
    let result = if robustbench {
        let opts = deploy::robustbench::RobustBenchOptions {
            arch,
            weights: args.weights.clone(),
            out: args.out.clone(),
            eval_json: args.eval_json.clone(),
            test_images: args.test_images,
            python: args.python.clone(),
            script: args.robustbench_script.clone(),
        };
        deploy::robustbench::run(cfg, &opts, &interrupt).map(|info| info.summary(&args.out))
    } else {
        let opts = deploy::export::ExportOptions {
            arch,
            weights: args.weights.clone(),
            out: args.out.clone(),
            int8_calibration: args.int8.then_some(args.calibration),
            test_images: args.test_images,
            square_queries: args.square_queries,
            latency: (!args.no_latency).then(eval::edge::LatencyOptions::default),
            onnxruntime: args.onnxruntime.clone(),
            python: args.python.clone(),
            script: args.script.clone(),
            exe: std::env::current_exe()?,
        };
        deploy::export::run(cfg, &opts, &interrupt).map(|exported| {
            format!(
                "{}\nwritten to {}\n",
                exported.card.markdown(),
                exported.out.display()
            )
        })
    };
    match (result, interrupt.received()) {
        (Ok(text), _) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        (Err(_), Some(signal)) => {
            eprintln!(
                "interrupted by {}: export stopped, its child processes ended, nothing written; {}",
                signal.name(),
                deploy::export::kept_in(&args.out)
            );
            Ok(ExitCode::from(signal.exit_code() as u8))
        }
        (Err(e), None) => Err(e.into()),
    }
}

fn eval_command(cli: &Cli, args: &EvalArgs) -> Result<ExitCode> {
    if let Some(EvalAction::Merge(m)) = &args.action {
        let outcome = eval::command::merge(&m.parts, &m.json)?;
        print!("{}", outcome.table());
        outcome.write()?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = config_path(cli, &args.config)?;
    let cfg = config_or_defaults(path)?;
    let opts = eval_options(args)?;
    if let Some(n) = args.shards {
        return eval_shards(cli, args, path, cfg, &opts, n);
    }
    let placement = [
        (args.parallel.is_some(), "--parallel"),
        (args.backend.is_some(), "--backend"),
        (args.ray_address.is_some(), "--ray-address"),
        (args.retries.is_some(), "--retries"),
    ];
    if let Some((_, flag)) = placement.iter().find(|(given, _)| *given) {
        bail!("eval {flag}: only with --shards N (it says how the shards run)");
    }
    let outcome = eval::command::run(cfg, &opts)?;
    print!("{}", outcome.table());
    outcome.write()?;
    Ok(ExitCode::SUCCESS)
}

/// What `eval` evaluates and how, from its flags.
fn eval_options(args: &EvalArgs) -> Result<eval::command::EvalOptions> {
    let latency = args.latency.then(|| eval::edge::LatencyOptions {
        batch_sizes: args.latency_batches.clone(),
        runs: args.latency_runs,
        ..Default::default()
    });
    Ok(eval::command::EvalOptions {
        arch: parse_arch(args.arch.as_deref())?,
        weights: args.weights.clone(),
        evals: EvalAttack::parse_list(&args.attacks)?,
        test_limit: args.test_limit,
        json: args.json.clone(),
        save_logits: args.save_logits.clone(),
        data_root: args.data_root.clone(),
        device: args.device.clone(),
        batch_size: args.batch_size,
        latency,
        cascade: args.cascade,
        eps: args.eps,
        shard: args.shard,
    })
}

/// `eval --shards N`: the shards on the local or Ray backend, then joined
/// and printed; SIGINT/SIGTERM stop the shards and keep the parts written.
fn eval_shards(
    cli: &Cli,
    args: &EvalArgs,
    config: Option<&Path>,
    cfg: Config,
    opts: &eval::command::EvalOptions,
    shards: usize,
) -> Result<ExitCode> {
    use ard_pipeline::sweep::{eval_shards, Backend, SweepSettings};
    let defaults = SweepSettings::default();
    let cwd = std::env::current_dir()?;
    let config = config.map(config::find_config).transpose()?;
    let mut child = vec!["--log-level".into(), cli.log_level.clone().into()];
    child.extend(args.shard_args(config.as_deref(), |p| cwd.join(p)));
    let plan = eval_shards::ShardedEval {
        shards: u32::try_from(shards)?,
        parallel: args.parallel.unwrap_or(shards),
        retries: args.retries.unwrap_or(0),
        backend: args.backend.map_or(Backend::Local, Backend::from),
        ray_address: args.ray_address.clone().unwrap_or(defaults.ray_address),
        args: child,
        poll: std::time::Duration::from_secs_f64(defaults.poll_s),
    };
    let signals = ard_pipeline::metrics::install(|signal| {
        log::warn!("{}: stopping the running shards", signal.name());
    })?;
    let stopped = || signals.received().is_some();
    let say = |line: &str| eprintln!("[eval] {line}");
    let result = eval_shards::run(cfg, opts, &plan, &stopped, say);
    if let (Err(_), Some(signal)) = (&result, signals.received()) {
        let json = opts.json.as_deref().unwrap_or(Path::new(""));
        eprintln!(
            "interrupted by {}: the shards stopped, the parts written are kept in {}; run the same command again to continue",
            signal.name(),
            eval_shards::parts_dir(json).display()
        );
        return Ok(ExitCode::from(signal.exit_code() as u8));
    }
    let outcome = result?;
    print!("{}", outcome.table());
    outcome.write()?;
    Ok(ExitCode::SUCCESS)
}
