//! `prep models list | fetch | verify | add | bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::condition::model::{prepare, InputData, LoadedModel};
use crate::models::{self, Origin, Registry};
use crate::runtime::{Batch, Device, RuntimeOptions};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List known models: conditions, pin, whether the file is cached.
    List,
    /// Download a model into the cache (PREP_CACHE) and check its sha256.
    Fetch {
        name: String,
        /// Seconds without progress before a download is abandoned.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Check cached model files (all, or NAME) against their pins.
    Verify { name: Option<String> },
    /// Register a local ONNX file with the I/O spec of an existing model or condition,
    /// pinned to the file's sha256 (the file is copied into the cache).
    Add {
        name: String,
        #[arg(long, value_name = "F.onnx")]
        file: PathBuf,
        /// A model name or a condition (hed, sketch, depth, keypose) whose spec it shares.
        #[arg(long, value_name = "MODEL_OR_CONDITION")]
        like: String,
    },
    /// Time a model alone on ready input tensors (images/s), with build's session settings.
    Bench {
        name: String,
        /// Use this file instead of the cached one (still checked against the pin).
        #[arg(long, value_name = "F.onnx")]
        file: Option<PathBuf>,
        /// Image side in pixels before the model's size policy.
        #[arg(long, default_value_t = 512)]
        size: u32,
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Intra-op threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Images to time (after one warm-up batch).
        #[arg(long, default_value_t = 32)]
        images: usize,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: ModelsArgs) -> Result<()> {
    let reg = Registry::load()?;
    match args.command {
        ModelsCommand::List => {
            println!(
                "{:<22} {:<16} {:<10} {:<8} {:<7} sha256",
                "name", "conditions", "decoder", "origin", "cached"
            );
            for (name, (e, origin)) in &reg.entries {
                println!(
                    "{:<22} {:<16} {:<10} {:<8} {:<7} {}",
                    name,
                    e.conditions.join(","),
                    format!("{:?}", e.output.decoder).to_lowercase(),
                    match origin {
                        Origin::Builtin => "builtin",
                        Origin::User => "user",
                    },
                    if reg.cached_file(name).is_file() {
                        "yes"
                    } else {
                        "no"
                    },
                    e.sha256.as_deref().unwrap_or("(not pinned)")
                );
            }
            println!("cache: {}", reg.cache.display());
            Ok(())
        }
        ModelsCommand::Fetch { name, timeout } => {
            let e = reg.get(&name)?;
            if timeout.is_nan() || timeout <= 0.0 {
                bail!("--timeout must be positive");
            }
            let f = models::fetch::fetch(&reg, e, Duration::from_secs_f64(timeout))?;
            eprintln!(
                "{} {}: {} ({} bytes, sha256 {}){}",
                if f.cached {
                    "already cached"
                } else {
                    "fetched"
                },
                name,
                f.path.display(),
                f.bytes,
                f.sha256,
                if f.pinned_now {
                    "; the entry had no pin and is now pinned to this file"
                } else {
                    ""
                }
            );
            Ok(())
        }
        ModelsCommand::Verify { name } => {
            let names: Vec<String> = match name {
                Some(n) => {
                    reg.get(&n)?;
                    vec![n]
                }
                None => reg.entries.keys().cloned().collect(),
            };
            let mut bad = 0;
            for n in names {
                let e = reg.get(&n)?;
                let p = reg.cached_file(&n);
                if !p.is_file() {
                    println!("{n:<22} not cached");
                    continue;
                }
                match models::verify_file(e, &p) {
                    Ok(sha) => println!("{n:<22} ok {sha}"),
                    Err(err) => {
                        bad += 1;
                        println!("{n:<22} BAD {err:#}");
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} cached model file(s) do not match their pins");
            }
            Ok(())
        }
        ModelsCommand::Add { name, file, like } => {
            if !file.is_file() {
                bail!("--file {}: not a file", file.display());
            }
            let entry = models::add(&reg, &name, &file, &like)?;
            // Check now that ONNX Runtime loads it and its input fits the spec.
            let check =
                LoadedModel::open(&entry, reg.cached_file(&name), &RuntimeOptions::default());
            if let Err(e) = check {
                let _ =
                    std::fs::remove_file(reg.cache.join("registry").join(format!("{name}.toml")));
                let _ = std::fs::remove_file(reg.cached_file(&name));
                return Err(e.context(format!("model {name} was not added")));
            }
            let role = if entry.conditions.is_empty() {
                "feature model".to_string()
            } else {
                entry.conditions.join(",")
            };
            eprintln!(
                "added model {name} ({role}; spec of {like}), sha256 {}, cached at {}",
                entry.sha256.as_deref().unwrap_or(""),
                reg.cached_file(&name).display()
            );
            Ok(())
        }
        ModelsCommand::Bench {
            name,
            file,
            size,
            batch_size,
            threads,
            images,
            device,
            json,
        } => {
            let e = reg.get(&name)?;
            let path = file.unwrap_or_else(|| reg.cached_file(&name));
            let m = LoadedModel::open(e, path, &RuntimeOptions { threads, device })?;
            let rgb = image::RgbImage::from_fn(size, size, |x, y| {
                image::Rgb([(x * 7 + y) as u8, (x ^ y) as u8, (y * 3) as u8])
            });
            let one = prepare(&e.input, &rgb);
            let b = batch_size.max(1);
            let shape = [b, one.dims[0], one.dims[1], one.dims[2]];
            let (f, i): (Vec<f32>, Vec<i32>) = match &one.data {
                InputData::F32(d) => (d.repeat(b), Vec::new()),
                InputData::I32(d) => (Vec::new(), d.repeat(b)),
            };
            let run_once = || -> Result<()> {
                m.run_raw(
                    &shape,
                    if f.is_empty() {
                        Batch::I32(&i)
                    } else {
                        Batch::F32(&f)
                    },
                )
            };
            run_once().context("warm-up run")?;
            let n_batches = images.div_ceil(b).max(1);
            let t0 = Instant::now();
            for _ in 0..n_batches {
                run_once()?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let ips = (n_batches * b) as f64 / secs;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"model": name, "images": n_batches * b, "batch_size": b,
                        "seconds": secs, "images_per_s": ips, "input_shape": shape})
                );
            } else {
                println!(
                    "{name}: {} images in {secs:.2} s = {ips:.2} images/s (batch {b}, input {shape:?})",
                    n_batches * b
                );
            }
            Ok(())
        }
    }
}
