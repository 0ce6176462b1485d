//! `prep generate` on the fixture pipeline (tests/fixtures/generate, made by
//! make_pipeline.py) over a demo dataset built at 64×64 with the color condition.
//! Parity with the NumPy reference (within 1e-4) is checked by scripts/test
//! (tests/reference/generate_ref.py --check-prep); here: the properties of the pipeline.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/generate")
}

/// The demo dataset at 64×64 with `color`, built once per test run (under the target's
/// tmp directory, rebuilt from scratch each run).
fn dataset() -> &'static Path {
    static DS: OnceLock<PathBuf> = OnceLock::new();
    DS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("generate-dataset");
        let _ = std::fs::remove_dir_all(&root);
        let out = root.join("ds");
        let o = prep()
            .env("PREP_CACHE", root.join("cache"))
            .args([
                "build",
                "--source",
                "demo",
                "--condition",
                "color",
                "--resolution",
                "64",
                "--image-format",
                "png",
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        out
    })
}

struct Gen {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    stderr: String,
}

impl Gen {
    fn pixels(&self) -> Vec<(String, Vec<f32>)> {
        let mut v: Vec<_> = std::fs::read_dir(self.dir.join("pixels"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.iter()
            .map(|p| {
                let a: ndarray::ArrayD<f32> =
                    ndarray_npy::ReadNpyExt::read_npy(std::fs::File::open(p).unwrap()).unwrap();
                (
                    p.file_name().unwrap().to_string_lossy().to_string(),
                    a.iter().copied().collect(),
                )
            })
            .collect()
    }
}

fn generate(extra: &[&str]) -> Gen {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gen");
    let fx = fixtures();
    let pipe = fx.join("pipeline");
    let mut args: Vec<String> = vec!["generate".into()];
    if !extra.contains(&"--pipeline") {
        args.push("--pipeline".into());
        args.push(pipe.to_str().unwrap().into());
    }
    args.extend::<Vec<String>>(vec![
        "--input".into(),
        dataset().to_str().unwrap().into(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--limit".into(),
        "2".into(),
        "--width".into(),
        "64".into(),
        "--height".into(),
        "64".into(),
        "--threads".into(),
        "1".into(),
        "--save-pixels".into(),
        "--quiet".into(),
    ]);
    for (flag, default) in [("--steps", "6"), ("--seed", "42")] {
        if !extra.contains(&flag) {
            args.push(flag.into());
            args.push(default.into());
        }
    }
    for e in extra {
        args.push(e.replace("@FX", fx.to_str().unwrap()));
    }
    let o = prep().args(&args).output().unwrap();
    assert!(o.status.success(), "prep {args:?}:\n{}", stderr(&o));
    Gen {
        _tmp: tmp,
        dir: out,
        stderr: stderr(&o),
    }
}

fn max_diff(a: &Gen, b: &Gen) -> f32 {
    let (pa, pb) = (a.pixels(), b.pixels());
    assert_eq!(pa.len(), 2);
    assert_eq!(pa.len(), pb.len());
    let mut m = 0f32;
    for ((ka, va), (kb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(ka, kb);
        assert_eq!(va.len(), 3 * 64 * 64);
        for (x, y) in va.iter().zip(vb) {
            m = m.max((x - y).abs());
        }
    }
    m
}

#[test]
fn zero_weight_equals_no_adapter_and_the_adapter_matters() {
    let none = generate(&[]);
    let zero = generate(&["--adapter", "color=@FX/adapters/color:0"]);
    let one = generate(&["--adapter", "color=@FX/adapters/color:1"]);
    assert_eq!(max_diff(&none, &zero), 0.0);
    assert!(max_diff(&none, &one) > 1e-3, "{}", max_diff(&none, &one));
    assert!(
        zero.stderr.contains("adapter color: 0 run(s)"),
        "{}",
        zero.stderr
    );
}

#[test]
fn adapter_runs_once_per_image() {
    let g = generate(&["--adapter", "color=@FX/adapters/color:0.7", "--steps", "9"]);
    assert!(g.stderr.contains("generated 2 image(s)"), "{}", g.stderr);
    assert!(g.stderr.contains("adapter color: 2 run(s)"), "{}", g.stderr);
    // I/O binding: the text embeddings and the four residuals are bound once per image,
    // only the sample and the timestep per step; with the adapters applied for half of the
    // steps, the residuals are rebound (to zeros) once more.
    let once =
        "input(s) bound once per image (text, adapter residuals), 2 per step (sample, timestep)";
    assert!(
        g.stderr.contains(&format!("unet I/O binding: 5 {once}")),
        "{}",
        g.stderr
    );
    let half = generate(&[
        "--adapter",
        "color=@FX/adapters/color:0.7",
        "--steps",
        "8",
        "--adapter-conditioning-factor",
        "0.5",
    ]);
    assert!(
        half.stderr.contains(&format!("unet I/O binding: 9 {once}")),
        "{}",
        half.stderr
    );
}

#[test]
fn two_weights_of_one_linear_adapter_compose_as_their_sum() {
    // The fixture adapters are linear: ω₁·F(C) + ω₂·F(C) = (ω₁ + ω₂)·F(C).
    let two = generate(&[
        "--adapter",
        "a=@FX/adapters/color:0.3",
        "--adapter",
        "b=@FX/adapters/color:0.5",
    ]);
    let one = generate(&["--adapter", "a=@FX/adapters/color:0.8"]);
    assert!(max_diff(&two, &one) < 1e-5, "{}", max_diff(&two, &one));
    assert!(
        two.stderr.contains("adapter a: 2 run(s)") && two.stderr.contains("adapter b: 2 run(s)")
    );
    // A different adapter (grey input) composes too, and changes the image.
    let mixed = generate(&[
        "--adapter",
        "a=@FX/adapters/color:0.8",
        "--adapter",
        "g=@FX/adapters/gray:0.5",
    ]);
    assert!(max_diff(&mixed, &one) > 1e-4);
}

#[test]
fn same_seed_same_bytes_other_seed_other_image() {
    let a = generate(&[
        "--adapter",
        "color=@FX/adapters/color",
        "--scheduler",
        "dpm++2m",
    ]);
    let b = generate(&[
        "--adapter",
        "color=@FX/adapters/color",
        "--scheduler",
        "dpm++2m",
    ]);
    for f in ["generated.parquet", "generate.json"] {
        assert_eq!(
            std::fs::read(a.dir.join(f)).unwrap(),
            std::fs::read(b.dir.join(f)).unwrap(),
            "{f}"
        );
    }
    let c = generate(&[
        "--adapter",
        "color=@FX/adapters/color",
        "--scheduler",
        "dpm++2m",
        "--seed",
        "7",
    ]);
    assert!(max_diff(&a, &c) > 1e-3);
}

#[test]
fn init_noise_replaces_the_seed_and_guidance_one_is_conditional_only() {
    let seeded = generate(&["--guidance", "1"]);
    // The same latents given as --init-noise reproduce the seeded run exactly.
    let noise = seeded.dir.join("noise");
    let mut files: Vec<_> = std::fs::read_dir(&noise)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut all = Vec::new();
    for f in &files {
        let a: ndarray::ArrayD<f32> =
            ndarray_npy::ReadNpyExt::read_npy(std::fs::File::open(f).unwrap()).unwrap();
        assert_eq!(a.shape(), [1, 4, 8, 8]);
        all.extend(a.iter().copied());
    }
    let stacked = ndarray::Array4::from_shape_vec((2, 4, 8, 8), all).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("noise.npy");
    ndarray_npy::WriteNpyExt::write_npy(&stacked, std::fs::File::create(&npy).unwrap()).unwrap();
    let given = generate(&[
        "--guidance",
        "1",
        "--init-noise",
        npy.to_str().unwrap(),
        "--seed",
        "999",
    ]);
    assert_eq!(max_diff(&seeded, &given), 0.0);
    // Guidance 1 runs the conditional branch alone; guidance > 1 differs.
    let guided = generate(&["--guidance", "7.5"]);
    assert!(max_diff(&seeded, &guided) > 1e-3);
}

#[test]
fn output_parquet_has_the_images_and_settings() {
    let g = generate(&["--adapter", "color=@FX/adapters/color:0.6"]);
    use arrow_array::cast::AsArray;
    let f = std::fs::File::open(g.dir.join("generated.parquet")).unwrap();
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let md = b.schema().metadata().get("huggingface").unwrap().clone();
    assert!(md.contains("\"image\":{\"_type\":\"Image\"}"), "{md}");
    let batches: Vec<_> = b.build().unwrap().map(|x| x.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let batch = &batches[0];
    let img = batch.column_by_name("image").unwrap().as_struct();
    let bytes = img.column_by_name("bytes").unwrap().as_binary::<i32>();
    let keys = batch.column_by_name("key").unwrap().as_string::<i32>();
    let prompts = batch.column_by_name("prompt").unwrap().as_string::<i32>();
    let seeds = batch
        .column_by_name("seed")
        .unwrap()
        .as_primitive::<arrow_array::types::Int64Type>();
    let adapters = batch.column_by_name("adapters").unwrap().as_string::<i32>();
    for i in 0..batch.num_rows() {
        assert_eq!(decode_rgb(bytes.value(i)).dimensions(), (64, 64));
        assert!(keys.value(i).starts_with("demo/"));
        assert!(!prompts.value(i).is_empty());
        assert_eq!(seeds.value(i), 42 + i as i64);
        assert!(
            adapters.value(i).contains("\"weight\":0.6"),
            "{}",
            adapters.value(i)
        );
    }
    let png = std::fs::read_dir(g.dir.join("images")).unwrap().count();
    assert_eq!(png, 2);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(g.dir.join("generate.json")).unwrap()).unwrap();
    assert_eq!(manifest["adapters"][0]["weight"], 0.6f32 as f64);
    assert_eq!(manifest["scheduler"], "ddim");
}

#[test]
fn errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        "generate",
        "--pipeline",
        "/nonexistent/pipe",
        "--input",
        dataset().to_str().unwrap(),
        "--out",
        tmp.path().join("g").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--pipeline /nonexistent/pipe"),
        "{}",
        stderr(&o)
    );
    let fx = fixtures();
    let o = run(&[
        "generate",
        "--pipeline",
        fx.join("pipeline").to_str().unwrap(),
        "--input",
        dataset().to_str().unwrap(),
        "--adapter",
        "x=nodir",
        "--out",
        tmp.path().join("g").to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("adapter.toml"), "{}", stderr(&o));
    let o = run(&[
        "generate",
        "--pipeline",
        fx.join("pipeline").to_str().unwrap(),
        "--input",
        dataset().to_str().unwrap(),
        "--adapter",
        &format!("c={}", fx.join("adapters/color").display()),
        "--condition",
        "depth",
        "--out",
        tmp.path().join("g").to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("no column \"depth\""), "{}", stderr(&o));
    assert!(
        !tmp.path().join("g").exists(),
        "nothing is written before the checks pass"
    );
}

/// The contract's variants give the same images: int32 token ids, a float timestep, a UNet
/// without adapter inputs (when no adapter is used).
#[test]
fn contract_variants_give_the_same_images() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let copy = |dst: &Path| {
        for sub in [
            "text_encoder",
            "unet",
            "vae_decoder",
            "vae_encoder",
            "tokenizer",
            "scheduler",
        ] {
            std::fs::create_dir_all(dst.join(sub)).unwrap();
            for e in std::fs::read_dir(fx.join("pipeline").join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), dst.join(sub).join(e.file_name())).unwrap();
            }
        }
    };
    let v = tmp.path().join("variant");
    copy(&v);
    std::fs::copy(
        fx.join("variants/text_encoder_int32.onnx"),
        v.join("text_encoder/model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        fx.join("variants/unet_float_timestep.onnx"),
        v.join("unet/model.onnx"),
    )
    .unwrap();
    let base = generate(&["--adapter", "color=@FX/adapters/color:0.9"]);
    let var = generate(&[
        "--pipeline",
        v.to_str().unwrap(),
        "--adapter",
        "color=@FX/adapters/color:0.9",
    ]);
    assert_eq!(max_diff(&base, &var), 0.0);

    let n = tmp.path().join("no_adapter");
    copy(&n);
    std::fs::copy(
        fx.join("variants/unet_no_adapter.onnx"),
        n.join("unet/model.onnx"),
    )
    .unwrap();
    let base = generate(&[]);
    let plain = generate(&["--pipeline", n.to_str().unwrap()]);
    assert_eq!(max_diff(&base, &plain), 0.0);
    let o = run(&[
        "generate",
        "--pipeline",
        n.to_str().unwrap(),
        "--input",
        dataset().to_str().unwrap(),
        "--adapter",
        &format!("c={}", fx.join("adapters/color").display()),
        "--out",
        tmp.path().join("g").to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        stderr(&o).contains("has no adapter_res_0..3 inputs"),
        "{}",
        stderr(&o)
    );
}

/// An fp16 export (float16 inputs, outputs and weights) of the same pipeline and adapter:
/// prep converts at every model boundary, so the images are the fp32 images up to fp16
/// rounding (the exact check against the reference on the same files is in scripts/test).
#[test]
fn fp16_exports_give_the_fp32_images_up_to_rounding() {
    let fx = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let (p, a) = (tmp.path().join("pipe16"), tmp.path().join("ad16"));
    for (src, dst) in [
        (fx.join("pipeline"), p.clone()),
        (fx.join("adapters/color"), a.clone()),
    ] {
        for e in walk(&src) {
            let to = dst.join(e.strip_prefix(&src).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&e, &to).unwrap();
        }
    }
    for sub in ["text_encoder", "unet", "vae_decoder", "vae_encoder"] {
        std::fs::copy(
            fx.join(format!("variants/fp16/{sub}.onnx")),
            p.join(sub).join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::copy(
        fx.join("variants/fp16/adapter_color.onnx"),
        a.join("model.onnx"),
    )
    .unwrap();
    let full = generate(&["--adapter", "color=@FX/adapters/color:0.9"]);
    let half = generate(&[
        "--pipeline",
        p.to_str().unwrap(),
        "--adapter",
        &format!("color={}:0.9", a.display()),
    ]);
    let d = max_diff(&full, &half);
    assert!(d > 0.0 && d < 0.03, "fp16 vs fp32: max |diff| = {d}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn write_masks(dir: &Path, value: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=5 {
        let img = image::GrayImage::from_pixel(64, 64, image::Luma([value]));
        img.save(dir.join(format!("demo_demo_00000000000{i}.png")))
            .unwrap();
    }
}

/// Latent blending (4-channel UNet): a white mask regenerates everything (= no --mask); a
/// black mask keeps the source everywhere, so the seed no longer matters.
#[test]
fn inpainting_masks_select_what_is_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let (white, black) = (tmp.path().join("white"), tmp.path().join("black"));
    write_masks(&white, 255);
    write_masks(&black, 0);
    let ad = ["--adapter", "color=@FX/adapters/color:0.5"];
    let plain = generate(&ad);
    let all = generate(&[ad[0], ad[1], "--mask", white.to_str().unwrap()]);
    assert_eq!(max_diff(&plain, &all), 0.0);
    let keep1 = generate(&[ad[0], ad[1], "--mask", black.to_str().unwrap()]);
    let keep2 = generate(&[
        ad[0],
        ad[1],
        "--mask",
        black.to_str().unwrap(),
        "--seed",
        "5",
    ]);
    assert_eq!(max_diff(&keep1, &keep2), 0.0);
    assert!(max_diff(&keep1, &plain) > 1e-3);
    // A partial mask (the color map thresholded at 0.5) differs from both.
    let part = generate(&[ad[0], ad[1], "--mask", "color"]);
    assert!(max_diff(&part, &plain) > 1e-4 && max_diff(&part, &keep1) > 1e-4);
    let manifest = std::fs::read_to_string(part.dir.join("generate.json")).unwrap();
    assert!(manifest.contains("\"mask\": \"color\""), "{manifest}");

    // A 9-channel inpainting UNet needs --mask.
    let fx = fixtures();
    let p = tmp.path().join("pipe9");
    for sub in [
        "text_encoder",
        "unet",
        "vae_decoder",
        "vae_encoder",
        "tokenizer",
        "scheduler",
    ] {
        std::fs::create_dir_all(p.join(sub)).unwrap();
        for e in std::fs::read_dir(fx.join("pipeline").join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), p.join(sub).join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        fx.join("variants/unet_inpaint9.onnx"),
        p.join("unet/model.onnx"),
    )
    .unwrap();
    let o = run(&[
        "generate",
        "--pipeline",
        p.to_str().unwrap(),
        "--input",
        dataset().to_str().unwrap(),
        "--out",
        tmp.path().join("g").to_str().unwrap(),
        "--width",
        "64",
        "--height",
        "64",
        "--quiet",
    ]);
    assert!(stderr(&o).contains("needs --mask"), "{}", stderr(&o));
    let native = generate(&["--pipeline", p.to_str().unwrap(), "--mask", "color"]);
    assert!(max_diff(&native, &part) > 1e-4);
}
