//! `ard-pipeline`: the command-line entry point. Errors are printed with their
//! cause chain and turned into exit codes; no panic reaches the user for bad input.

mod cli;

use anyhow::{bail, Context, Result};
use ard_pipeline::config::{self, Config};
use ard_pipeline::eval::{self, EvalAttack};
use ard_pipeline::models::{Arch, Model};
use ard_pipeline::train::{self, RunDir};
use clap::Parser;
use cli::{Cli, Command, EvalArgs, RunArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_timestamp_secs()
        .init();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let Some(name) = &cli.config else {
        bail!("no --config given (e.g. --config configs/quickstart.toml)");
    };
    let path = config::find_config(name)?;
    Ok(config::load(&path)?)
}

fn dispatch(cli: Cli) -> Result<()> {
    match &cli.command {
        None => run(&load_config(&cli)?, &cli.run),
        Some(Command::Run(args)) => run(&load_config(&cli)?, args),
        Some(Command::Validate) => {
            let cfg = load_config(&cli)?;
            println!(
                "ok: {} (student {}, attack {:?} x{}, loss {:?}, {} epochs)",
                cli.config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                cfg.student.arch,
                cfg.attack.kind,
                cfg.attack.steps,
                cfg.loss.kind,
                cfg.train.epochs
            );
            Ok(())
        }
        Some(Command::Eval(args)) => {
            let cfg = match &cli.config {
                Some(_) => load_config(&cli)?,
                None => Config::default(),
            };
            eval_command(cfg, args)
        }
    }
}

fn run(cfg: &Config, args: &RunArgs) -> Result<()> {
    if args.dry_run {
        train::sequential::RunSetup::build(cfg)?;
        println!("dry run ok: config, data and models are usable");
        return Ok(());
    }
    let dir = RunDir::create(cfg)?;
    log::info!("run folder {}", dir.path.display());
    let outcome = train::train_sequential(cfg, Some(&dir), |line| log::info!("{line}"))?;
    println!(
        "trained {} steps in {:.1}s; results in {}",
        outcome.steps,
        outcome.wall_s,
        dir.path.display()
    );
    if let Some(eval) = outcome.epochs.last().and_then(|e| e.eval.as_ref()) {
        for (name, acc) in &eval.accuracy {
            println!("  {name:>14}: {acc:6.2}%");
        }
    }
    Ok(())
}

fn eval_command(mut cfg: Config, args: &EvalArgs) -> Result<()> {
    if let Some(root) = &args.data_root {
        cfg.data.root = root.clone();
    }
    if let Some(device) = &args.device {
        cfg.run.device = device.clone();
    }
    if let Some(b) = args.batch_size {
        cfg.data.batch_size = b;
    }
    let arch: Arch = match &args.arch {
        Some(name) => name.parse().map_err(anyhow::Error::msg)?,
        None => cfg.student.arch,
    };
    let evals: Vec<EvalAttack> = args
        .attacks
        .split(',')
        .map(|a| EvalAttack::parse(a.trim()).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let device = ard_pipeline::device::resolve_device(&cfg.run.device)?;
    ard_pipeline::device::set_threads(cfg.run.threads);
    ard_pipeline::data::ensure_cifar10(&cfg.data)?;
    let mut test = ard_pipeline::data::load_split(
        &cfg.data.root,
        ard_pipeline::data::SplitKind::Test,
        cfg.data.checksums,
    )?;
    if let Some(n) = args
        .test_limit
        .or(cfg.eval.test_limit)
        .or(cfg.data.test_limit)
    {
        test = test.prefix(n);
    }
    let set = train::sequential::eval_set(&test)?;
    let model = Model::load(arch, device, &args.weights)?;
    let report = eval::evaluate(
        &model,
        &set,
        &evals,
        &cfg.attack,
        cfg.data.batch_size,
        cfg.run.seed,
        None,
        |done, n| log::debug!("eval {done}/{n}"),
    )?;
    println!(
        "{arch} on {} test images ({})",
        report.images,
        args.weights.display()
    );
    for (name, acc) in &report.accuracy {
        println!("  {name:>14}: {acc:6.2}%");
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.save_logits {
        let logits = tch::no_grad(|| {
            let mut outs = Vec::new();
            let n = set.images.size()[0];
            let mut s = 0;
            while s < n {
                let len = (cfg.data.batch_size as i64).min(n - s);
                outs.push(
                    model
                        .forward_t(&set.images.narrow(0, s, len).to_device(device), false)
                        .to_device(tch::Device::Cpu),
                );
                s += len;
            }
            tch::Tensor::cat(&outs, 0)
        });
        ard_pipeline::checkpoint::write_atomic(
            path,
            &[
                ("logits".to_string(), logits),
                ("labels".to_string(), set.labels.shallow_clone()),
            ],
        )?;
    }
    Ok(())
}
