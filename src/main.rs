use std::process::ExitCode;

use clap::Parser;

use prep::cli::{BuildCommand, Cli, Command};
use prep::config::{BuildConfig, ShardSelector};
use prep::pipeline::{self, RunOptions};

#[global_allocator]
static ALLOC: prep::alloc::HugePageAlloc = prep::alloc::HugePageAlloc;

fn main() -> ExitCode {
    prep::alloc::tune_malloc();
    prep::runtime::disable_telemetry_by_default();
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
    let auto = cmd.shard.as_deref() == Some("auto");
    Ok(RunOptions {
        threads: cmd.threads,
        shard: match cmd.shard.as_deref() {
            None | Some("auto") => ShardSelector::ALL,
            Some(s) if s.starts_with("env") => {
                prep::scaleout::shard_from_env(s, &|v| std::env::var(v).ok())?
            }
            Some(s) => ShardSelector::parse(s)?,
        },
        auto,
        lease: cmd.lease.map_or(pipeline::DEFAULT_LEASE, |d| d.into()),
        remote: cmd.store.options(),
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
    let s = if opts.auto {
        build_auto(&cfg, &out, &opts)?
    } else {
        pipeline::build(&cfg, &out, &opts)?
    };
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
    if !s.busy.is_empty() || !s.lost.is_empty() {
        eprintln!(
            "{} shard(s) left to other workers' live claims, {} built but committed by another worker first",
            s.busy.len(),
            s.lost.len()
        );
    }
    eprintln!("output: {}", out.display());
    Ok(())
}

/// `--shard auto`: pass over the shard list, claiming what is free, until every shard is
/// done; shards other workers hold are waited for, and taken over if their lease expires.
fn build_auto(
    cfg: &BuildConfig,
    out: &std::path::Path,
    opts: &RunOptions,
) -> anyhow::Result<pipeline::BuildSummary> {
    let mut total = pipeline::BuildSummary::default();
    loop {
        let s = pipeline::build(cfg, out, opts)?;
        total.num_records = s.num_records;
        total.num_shards = s.num_shards;
        total.built.extend(&s.built);
        total.lost.extend(&s.lost);
        total.rows += s.rows;
        for (k, v) in &s.failed {
            *total.failed.entry(k.clone()).or_insert(0) += v;
        }
        if total.skipped.is_empty() {
            total.skipped = s.skipped.clone();
        }
        total.complete = s.complete;
        total.busy = s.busy.clone();
        if s.complete || opts.dry_run || s.busy.is_empty() {
            return Ok(total);
        }
        // Others hold the rest: wait a fraction of a lease, then look again (their shards
        // are done by then, or their claims have expired and are ours to take).
        std::thread::sleep((opts.lease / 4).max(std::time::Duration::from_millis(200)));
    }
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
        Command::Status(args) => {
            let store = prep::sink::OutStore::open(&args.out, &args.store.options())?;
            let s = prep::scaleout::status(&store)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                prep::scaleout::print_status(&s);
            }
            Ok(())
        }
        Command::Finalize(args) => {
            let store = prep::sink::OutStore::open(&args.out, &args.store.options())?;
            let f = prep::scaleout::finalize(&store)?;
            eprintln!(
                "{}: {} shards, {} rows{}; dataset.json {}",
                store.display(),
                f.num_shards,
                f.rows,
                if f.failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", f.failed.values().sum::<usize>())
                },
                if f.wrote {
                    "written"
                } else {
                    "already up to date"
                }
            );
            Ok(())
        }
        Command::Eval(cmd) => prep::eval::run(cmd),
        Command::Generate(args) => prep::generate::cli::run(&args),
        Command::Report(args) => {
            let d = prep::report::run_anywhere(&args)?;
            let regressions = d
                .comparisons
                .iter()
                .filter(|c| c.verdict == "regression")
                .count();
            eprintln!(
                "wrote {}/index.html (study {}, night {}: {} rows, {} fits, {regressions} regression(s))",
                args.out.to_string_lossy().trim_end_matches('/'),
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
            let summary = prep::inspect::summarize(&args.dir, &args.store.options())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                prep::inspect::print(&summary);
            }
            if let Some(grid) = &args.grid {
                let cols =
                    prep::inspect::grid(&args.dir, &args.store.options(), grid, args.rows, 256)?;
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
