use std::process::ExitCode;

use clap::Parser;

use prep::cli::{BuildCommand, Cli, Command};
use prep::config::{BuildConfig, ShardSelector};
use prep::pipeline::{self, RunOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn options(cmd: &BuildCommand) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        threads: cmd.threads,
        shard: match &cmd.shard {
            Some(s) => ShardSelector::parse(s)?,
            None => ShardSelector::ALL,
        },
        dry_run: cmd.dry_run,
        progress: !cmd.quiet,
        command: std::env::args().collect(),
        model_files: cmd.model_file.clone(),
        batch_size: cmd.batch_size,
        device: cmd.device,
    })
}

fn build(cmd: &BuildCommand, fetch_only: bool) -> anyhow::Result<()> {
    let (mut args, out) = cmd.merged()?;
    if fetch_only && args.jpeg_dct_scaling.is_none() {
        args.jpeg_dct_scaling = Some(true);
    }
    let cfg = BuildConfig::resolve(&args)?;
    if fetch_only && !cfg.conditions.is_empty() {
        anyhow::bail!("prep fetch only downloads; compute conditions with `prep build` (same flags plus --condition)");
    }
    let opts = options(cmd)?;
    let s = pipeline::build(&cfg, &out, &opts)?;
    if cmd.dry_run {
        return Ok(());
    }
    let failed: usize = s.failed.values().sum();
    eprintln!(
        "built {} shard(s) ({} rows, {} failed{}), skipped {} already complete; {} records in {} shard(s) total{}",
        s.built.len(),
        s.rows,
        failed,
        if failed > 0 {
            format!(": {}", s.failed.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
        } else {
            String::new()
        },
        s.skipped.len(),
        s.num_records,
        s.num_shards,
        if s.complete { ", complete" } else { ", not complete yet (other --shard processes, or re-run)" }
    );
    eprintln!("output: {}", out.display());
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(cmd) => build(&cmd, false),
        Command::Fetch(cmd) => match &cmd.retry_failed {
            None => build(&cmd.build, true),
            Some(dir) => {
                let classes: Vec<String> = match &cmd.errors {
                    Some(list) => list
                        .split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                    None => pipeline::RETRYABLE.iter().map(|c| c.to_string()).collect(),
                };
                let s = pipeline::retry_failed(dir, &classes, &options(&cmd.build)?)?;
                eprintln!(
                    "retried {} row(s) of classes [{}] in {} shard(s): {} recovered, {} still failing",
                    s.retried,
                    classes.join(","),
                    s.shards.len(),
                    s.recovered,
                    s.retried - s.recovered
                );
                Ok(())
            }
        },
        Command::Models(args) => prep::models_cmd::run(args),
        Command::Eval(cmd) => prep::eval::run(cmd),
        Command::Report(args) => {
            let d = prep::report::run(&args)?;
            let regressions = d
                .comparisons
                .iter()
                .filter(|c| c.verdict == "regression")
                .count();
            eprintln!(
                "wrote {} (study {}, night {}: {} rows, {} fits, {regressions} regression(s))",
                args.out.join("index.html").display(),
                d.study,
                d.night,
                d.rows.len(),
                d.fits.len()
            );
            Ok(())
        }
        Command::Subset(args) => {
            let m = prep::subset::run(&args)?;
            for (name, s) in &m.splits {
                eprintln!(
                    "{name:>8}: {:>9} rows -> {}",
                    s.rows,
                    args.out.join(&s.index).display()
                );
            }
            eprintln!("wrote {}", args.out.join("subsets.json").display());
            Ok(())
        }
        Command::Inspect(args) => {
            let summary = prep::inspect::summarize(&args.dir)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                prep::inspect::print(&summary);
            }
            if let Some(grid) = &args.grid {
                let cols = prep::inspect::grid(&args.dir, grid, args.rows, 256)?;
                eprintln!(
                    "wrote {} ({} rows: {})",
                    grid.display(),
                    args.rows,
                    cols.join(" | ")
                );
            }
            Ok(())
        }
    }
}
