#!/usr/bin/env python3
"""NumPy + onnxruntime reference of `prep generate`: Stable Diffusion + T2I-Adapter
sampling written from diffusers' definitions (DDIMScheduler with eta=0,
DPMSolverMultistepScheduler with algorithm_type="dpmsolver++", solver_order=2,
StableDiffusionAdapterPipeline / MultiAdapter), run on the same ONNX files.

  generate_ref.py --pipeline DIR --prompt TEXT --init-noise N.npy --out IMG.npy
                  [--adapter DIR:W:COND.png ...] [--adapter-features-of DIR:W1:C1.png,W2:C2.png]
                  [--scheduler ddim|dpm++2m] [--steps 20] [--guidance 7.5]
                  [--adapter-conditioning-factor 1.0]
  generate_ref.py --check-prep GEN_DIR --pipeline DIR --dataset DIR ...
      regenerate every row of prep's output Parquet here and compare (max |diff| <= 1e-4)
      (--fed-sum: the reference feeds one adapter the weighted sum of the conditions)
  generate_ref.py --scheduler-goldens OUT.rs
      write the Rust unit-test expectations of src/generate/scheduler.rs

Pixels are the decoded image mapped to [0, 1] (x / 2 + 0.5, clipped), float, before 8-bit
quantisation. Scheduler arithmetic follows diffusers (float32 tensors); see the classes.
"""
import argparse
import io
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


# ---------------------------------------------------------------- schedulers (diffusers)

def betas_for(cfg):
    n = cfg.get("num_train_timesteps", 1000)
    if cfg.get("trained_betas") is not None:
        return np.asarray(cfg["trained_betas"], dtype=np.float32)
    sched = cfg.get("beta_schedule", "linear")
    b0, b1 = cfg.get("beta_start", 0.0001), cfg.get("beta_end", 0.02)
    if sched == "linear":
        return np.linspace(b0, b1, n, dtype=np.float32)
    if sched == "scaled_linear":
        return (np.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=np.float32) ** 2).astype(np.float32)
    if sched == "squaredcos_cap_v2":
        ab = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - ab((i + 1) / n) / ab(i / n), 0.999) for i in range(n)], dtype=np.float32)
    raise ValueError(sched)


def alphas_cumprod_for(cfg):
    betas = betas_for(cfg)
    if cfg.get("rescale_betas_zero_snr", False):
        a_bar_sqrt = np.sqrt(np.cumprod(1.0 - betas, dtype=np.float32))
        a0, aT = a_bar_sqrt[0].copy(), a_bar_sqrt[-1].copy()
        a_bar_sqrt = (a_bar_sqrt - aT) * a0 / (a0 - aT)
        a_bar = a_bar_sqrt ** 2
        alphas = np.concatenate([a_bar[:1], a_bar[1:] / a_bar[:-1]])
        betas = (1 - alphas).astype(np.float32)
    return np.cumprod(1.0 - betas, dtype=np.float32)


class DDIM:
    """diffusers.DDIMScheduler, eta = 0."""

    def __init__(self, cfg, steps):
        self.n = cfg.get("num_train_timesteps", 1000)
        self.ac = alphas_cumprod_for(cfg)
        self.final = np.float32(1.0) if cfg.get("set_alpha_to_one", True) else self.ac[0]
        self.pred = cfg.get("prediction_type", "epsilon")
        self.clip = cfg.get("clip_sample", True)
        self.clip_range = cfg.get("clip_sample_range", 1.0)
        self.steps = steps
        spacing = cfg.get("timestep_spacing") or "leading"
        off = cfg.get("steps_offset", 0)
        if spacing == "linspace":
            ts = np.linspace(0, self.n - 1, steps).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            r = self.n // steps
            ts = (np.arange(0, steps) * r).round()[::-1].copy().astype(np.int64) + off
        elif spacing == "trailing":
            r = self.n / steps
            ts = np.round(np.arange(self.n, 0, -r)).astype(np.int64) - 1
        else:
            raise ValueError(spacing)
        self.timesteps = ts
        self.i = 0

    def add_noise(self, x0, noise, t):
        a = self.ac[t]
        return (np.sqrt(a) * x0 + np.sqrt(1 - a) * noise).astype(np.float32)

    def step(self, out, x):
        t = self.timesteps[self.i]
        self.i += 1
        prev = t - self.n // self.steps
        a_t = self.ac[t]
        a_prev = self.ac[prev] if prev >= 0 else self.final
        b_t = 1 - a_t
        if self.pred == "epsilon":
            x0 = (x - b_t ** 0.5 * out) / a_t ** 0.5
            eps = out
        elif self.pred == "sample":
            x0 = out
            eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        else:
            x0 = a_t ** 0.5 * x - b_t ** 0.5 * out
            eps = a_t ** 0.5 * out + b_t ** 0.5 * x
        if self.clip:
            x0 = np.clip(x0, -self.clip_range, self.clip_range)
            eps = (x - a_t ** 0.5 * x0) / b_t ** 0.5
        return (a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps).astype(np.float32)


class DPMpp2M:
    """diffusers.DPMSolverMultistepScheduler(algorithm_type='dpmsolver++', solver_order=2)."""

    def __init__(self, cfg, steps):
        n = cfg.get("num_train_timesteps", 1000)
        ac = alphas_cumprod_for(cfg)
        if cfg.get("rescale_betas_zero_snr", False):
            ac[-1] = 2 ** -24
        self.ac = ac
        self.pred = cfg.get("prediction_type", "epsilon")
        self.heun = cfg.get("solver_type", "midpoint") == "heun"
        self.lof = cfg.get("lower_order_final", True)
        self.eaf = cfg.get("euler_at_final", False)
        self.fst = cfg.get("final_sigmas_type", "zero")
        spacing = cfg.get("timestep_spacing") or "linspace"
        off = cfg.get("steps_offset", 0)
        if spacing == "linspace":
            ts = np.linspace(0, n - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif spacing == "leading":
            r = n // (steps + 1)
            ts = (np.arange(0, steps + 1) * r).round()[::-1][:-1].copy().astype(np.int64) + off
        elif spacing == "trailing":
            r = n / steps
            ts = np.arange(n, 0, -r).round().copy().astype(np.int64) - 1
        else:
            raise ValueError(spacing)
        sig = ((1 - ac) / ac) ** 0.5
        sigmas = np.interp(ts, np.arange(0, len(sig)), sig)
        last = ((1 - ac[0]) / ac[0]) ** 0.5 if self.fst == "sigma_min" else 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.timesteps = ts
        self.outs = [None, None]
        self.lower = 0
        self.i = 0

    @staticmethod
    def a_s(sigma):
        a = 1 / (sigma ** 2 + 1) ** 0.5
        return a, sigma * a

    def add_noise(self, x0, noise, t):
        sigma = np.float32(((1 - self.ac[t]) / self.ac[t]) ** 0.5)
        a, s = self.a_s(sigma)
        return (a * x0 + s * noise).astype(np.float32)

    def step(self, out, x):
        i, n = self.i, len(self.timesteps)
        lower_final = i == n - 1 and (self.eaf or (self.lof and n < 15) or self.fst == "zero")
        lower_second = i == n - 2 and self.lof and n < 15
        a0, s0 = self.a_s(self.sigmas[i])
        if self.pred == "epsilon":
            x0 = (x - s0 * out) / a0
        elif self.pred == "sample":
            x0 = out
        else:
            x0 = a0 * x - s0 * out
        self.outs = [self.outs[1], x0]
        with np.errstate(divide="ignore"):
            at, st = self.a_s(self.sigmas[i + 1])
            lt = np.log(at) - np.log(st)
            l0 = np.log(a0) - np.log(s0)
            h = lt - l0
            if self.lower < 1 or lower_final:
                xt = (st / s0) * x - (at * (np.exp(-h) - 1.0)) * x0
            else:
                _ = lower_second
                a1, s1 = self.a_s(self.sigmas[i - 1])
                l1 = np.log(a1) - np.log(s1)
                m0, m1 = self.outs[1], self.outs[0]
                r0 = (l0 - l1) / h
                d0, d1 = m0, (1.0 / r0) * (m0 - m1)
                if self.heun:
                    xt = (st / s0) * x - (at * (np.exp(-h) - 1.0)) * d0 + (at * ((np.exp(-h) - 1.0) / h + 1.0)) * d1
                else:
                    xt = (st / s0) * x - (at * (np.exp(-h) - 1.0)) * d0 - 0.5 * (at * (np.exp(-h) - 1.0)) * d1
        self.lower = min(self.lower + 1, 2)
        self.i += 1
        return xt.astype(np.float32)


SCHEDULERS = {"ddim": DDIM, "dpm++2m": DPMpp2M}


# ---------------------------------------------------------------- the pipeline

def run(sess, names, feeds):
    """sess.run with float data converted to what each input takes (float16 for fp16
    exports, rounded to nearest even as prep does) and float outputs read as float32."""
    types = {i.name: i.type for i in sess.get_inputs()}
    conv = {k: (v.astype(np.float16) if types.get(k) == "tensor(float16)" else v) for k, v in feeds.items()}
    return [o.astype(np.float32) if o.dtype == np.float16 else o for o in sess.run(names, conv)]


class Pipeline:
    def __init__(self, d):
        import onnxruntime as ort
        from clip_tokenizer_ref import ClipBpe

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = lambda p: ort.InferenceSession(os.path.join(d, p), so, providers=["CPUExecutionProvider"])
        self.text = s("text_encoder/model.onnx")
        self.unet = s("unet/model.onnx")
        self.vae = s("vae_decoder/model.onnx")
        self.vae_enc = s("vae_encoder/model.onnx") if os.path.exists(os.path.join(d, "vae_encoder/model.onnx")) else None
        self.tok = ClipBpe.from_dir(os.path.join(d, "tokenizer"))
        with open(os.path.join(d, "scheduler/scheduler_config.json")) as f:
            self.sched_cfg = json.load(f)
        self.scaling = 0.18215
        p = os.path.join(d, "vae_decoder/config.json")
        if os.path.exists(p):
            with open(p) as f:
                self.scaling = json.load(f).get("scaling_factor", 0.18215)
        self.unet_inputs = {i.name: i for i in self.unet.get_inputs()}

    def encode_text(self, prompts):
        ids = np.array([self.tok(p) for p in prompts], dtype=np.int64)
        inp = self.text.get_inputs()[0]
        if inp.type == "tensor(int32)":
            ids = ids.astype(np.int32)
        return run(self.text, None, {inp.name: ids})[0].astype(np.float32)

    def unet_call(self, latents, t, emb, res):
        ti = self.unet_inputs["timestep"]
        dt = np.float32 if ti.type == "tensor(float)" else np.int64
        b = latents.shape[0]
        if len(ti.shape) == 0:
            ts = np.array(t, dtype=dt)
        elif ti.shape[0] == 1:
            ts = np.array([t], dtype=dt)
        else:
            ts = np.full((b,), t, dtype=dt)
        feeds = {"sample": latents, "timestep": ts, "encoder_hidden_states": emb}
        for k in range(4):
            name = f"adapter_res_{k}"
            if name in self.unet_inputs:
                feeds[name] = res[k]
        return run(self.unet, None, feeds)[0]

    def zero_res(self, b, h, w):
        out = []
        for k in range(4):
            shp = self.unet_inputs[f"adapter_res_{k}"].shape
            c = shp[1]
            out.append(np.zeros((b, c, h >> k, w >> k), dtype=np.float32))
        return out

    def encode_image(self, x):
        """vae_encoder(x).mean * scaling_factor (latent_sample, or the first half of
        latent_parameters)."""
        out = run(self.vae_enc, None, {self.vae_enc.get_inputs()[0].name: x.astype(np.float32)})[0]
        return (out[:, :4] * self.scaling).astype(np.float32)

    def generate(self, prompt, noise, scheduler="ddim", steps=20, guidance=7.5, adapters=(),
                 factor=1.0, features=None, inpaint=None):
        """adapters: [(onnx session, weight, condition float array 1xCxHxW)]; features:
        precomputed summed adapter features (overrides adapters)."""
        sch = SCHEDULERS[scheduler](self.sched_cfg, steps)
        cfg = guidance > 1.0
        emb = self.encode_text(["", prompt] if cfg else [prompt])
        b = emb.shape[0]
        _, _, h, w = noise.shape
        if features is None and adapters:
            features = None
            for sess, wgt, cond in adapters:
                f = run(sess, [f"features_{k}" for k in range(4)], {"condition": cond})
                f = [wgt * x for x in f]
                features = f if features is None else [a + x for a, x in zip(features, f)]
        if features is not None:
            res = [np.concatenate([x] * b, axis=0).astype(np.float32) for x in features]
        else:
            res = None
        zero = self.zero_res(b, h, w) if "adapter_res_0" in self.unet_inputs else [None] * 4
        latents = noise.astype(np.float32) * 1.0
        native = self.unet_inputs["sample"].shape[1] == 9
        if inpaint is not None:
            # diffusers StableDiffusionInpaintPipeline (strength 1): mask resized by nearest,
            # 9-channel UNet: [latents, mask, masked-image latents]; else latent blending.
            img, mask = inpaint
            mask_lat = mask[::8, ::8][None, None].astype(np.float32)
            if native:
                known = self.encode_image(img * (mask < 0.5))
            else:
                known = self.encode_image(img)
        n_apply = int(len(sch.timesteps) * factor)
        for i, t in enumerate(sch.timesteps):
            inp = latents
            if native:
                inp = np.concatenate([latents, mask_lat, known], axis=1)
            inp = np.concatenate([inp] * b, axis=0)
            r = res if (res is not None and i < n_apply) else zero
            out = self.unet_call(inp, int(t), emb, r)
            if cfg:
                u, c = out[0:1], out[1:2]
                out = u + guidance * (c - u)
            latents = sch.step(out, latents)
            if inpaint is not None and not native:
                proper = known
                if i < len(sch.timesteps) - 1:
                    proper = sch.add_noise(known, noise, sch.timesteps[i + 1])
                latents = ((1 - mask_lat) * proper + mask_lat * latents).astype(np.float32)
        img = run(self.vae, None, {self.vae.get_inputs()[0].name: (latents / self.scaling).astype(np.float32)})[0]
        return np.clip(img / 2 + 0.5, 0, 1)[0]


def load_condition(png_bytes_or_path, channels):
    from PIL import Image

    im = Image.open(png_bytes_or_path if not isinstance(png_bytes_or_path, bytes) else io.BytesIO(png_bytes_or_path))
    im = im.convert("L" if channels == 1 else "RGB")
    a = np.asarray(im, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    return a[None].astype(np.float32)


def adapter_session(d):
    import onnxruntime as ort
    try:
        import tomllib
    except ImportError:  # python < 3.11
        import tomli as tomllib
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(d, "model.onnx"), so, providers=["CPUExecutionProvider"])
    with open(os.path.join(d, "adapter.toml"), "rb") as f:
        meta = tomllib.load(f)
    return sess, meta


# ---------------------------------------------------------------- checks

def file_stem(key):
    """prep's file name for a key (src/generate/mod.rs file_stem)."""
    s = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in key)
    return "_" + s if not s or s.startswith(".") else s


def check_prep(a):
    """Regenerate every row of prep's output here and compare to prep's float output."""
    import pyarrow.parquet as pq

    pipe = Pipeline(a.pipeline)
    gen = a.check_prep
    manifest = json.load(open(os.path.join(gen, "generate.json")))
    ds = pq.read_table(a.dataset).to_pylist() if os.path.isfile(a.dataset) else None
    if ds is None:
        import glob
        ds = []
        for p in sorted(glob.glob(os.path.join(a.dataset, "data", "*.parquet"))):
            ds.extend(pq.read_table(p).to_pylist())
    by_key = {r["key"]: r for r in ds}
    out = pq.read_table(os.path.join(gen, "generated.parquet")).to_pylist()
    assert out, "no generated rows"
    worst = 0.0
    for row in out:
        src = by_key[row["key"]]
        adapters = []
        for ad in manifest["adapters"]:
            sess, meta = adapter_session(ad["dir"])
            cond = load_condition(src[ad["condition"]]["bytes"], meta.get("in_channels", 3))
            adapters.append((sess, ad["weight"], cond))
        if a.fed_sum:
            # One run of the (linear) adapter on the weighted sum of the conditions.
            dirs = {ad["dir"] for ad in manifest["adapters"]}
            assert len(dirs) == 1, "--fed-sum needs every --adapter to be the same directory"
            cond = sum(w * c for _, w, c in adapters)
            adapters = [(adapters[0][0], 1.0, cond.astype(np.float32))]
        noise = np.load(os.path.join(gen, "noise", file_stem(row["key"]) + ".npy"))
        inpaint = None
        if manifest.get("mask"):
            m = manifest["mask"]
            mask_src = (os.path.join(m, file_stem(row["key"]) + ".png") if os.path.isdir(m)
                        else src[m]["bytes"])
            img = load_condition(src["image"]["bytes"], 3)[0:1] * 2 - 1
            mask = load_condition(mask_src, 1)[0, 0]
            inpaint = (img.astype(np.float32), (mask >= 0.5).astype(np.float32))
        ref = pipe.generate(row["prompt"], noise, manifest["scheduler"], manifest["steps"],
                            manifest["guidance"], adapters, manifest["adapter_conditioning_factor"],
                            inpaint=inpaint)
        got = np.load(os.path.join(gen, "pixels", file_stem(row["key"]) + ".npy"))
        d = float(np.abs(got - ref).max())
        worst = max(worst, d)
        print(f"{row['key']}: max |prep - reference| = {d:.2e}")
        if d > a.tol:
            sys.exit(f"{row['key']}: prep's image differs from the reference by {d} > {a.tol}")
    print(f"{len(out)} image(s) within {a.tol} of the NumPy reference (worst {worst:.2e})")


def scheduler_goldens(path):
    """Rust test expectations: timesteps and a 3-element trajectory per config."""
    sd = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}
    cases = [
        ("ddim", "sd_leading_20", sd, 20),
        ("ddim", "sd_trailing_7", dict(sd, timestep_spacing="trailing"), 7),
        ("ddim", "sd_linspace_9", dict(sd, timestep_spacing="linspace"), 9),
        ("ddim", "sd_v_alpha_one", dict(sd, prediction_type="v_prediction", set_alpha_to_one=True), 10),
        ("ddim", "linear_clip", {"beta_schedule": "linear", "clip_sample": True, "clip_sample_range": 0.5}, 6),
        ("ddim", "cos_zero_snr_trailing", {"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": True,
                                            "timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 5),
        ("dpm++2m", "sd_default_20", sd, 20),
        ("dpm++2m", "sd_leading_12", dict(sd, timestep_spacing="leading"), 12),
        ("dpm++2m", "sd_trailing_16_v", dict(sd, timestep_spacing="trailing", prediction_type="v_prediction"), 16),
        ("dpm++2m", "sd_heun_sigma_min", dict(sd, solver_type="heun", final_sigmas_type="sigma_min"), 8),
        ("dpm++2m", "sd_no_lower_final_25", dict(sd, lower_order_final=False, final_sigmas_type="sigma_min"), 25),
    ]
    lines = ["// Generated by tests/reference/generate_ref.py --scheduler-goldens: do not edit.",
             "// Each case: timesteps, then the sample after every step of a fixed model",
             "// (out = 0.3 * tanh(x) + 0.1 * cos(step + k)) from x = [0.9, -1.3, 0.2, 2.1].", ""]
    for kind, name, cfg, steps in cases:
        s = SCHEDULERS[kind](cfg, steps)
        x = np.array([0.9, -1.3, 0.2, 2.1], dtype=np.float32)
        traj = []
        for i in range(len(s.timesteps)):
            out = (0.3 * np.tanh(x) + 0.1 * np.cos(i + np.arange(4))).astype(np.float32)
            x = s.step(out, x)
            traj.append([float(v) for v in x])
        ts = ", ".join(str(int(t)) for t in s.timesteps)
        tr = ", ".join("[" + ", ".join(f"{v:.9e}" for v in r) + "]" for r in traj)
        cj = json.dumps(cfg).replace('"', '\\"')
        kind_rs = "SchedulerKind::Ddim" if kind == "ddim" else "SchedulerKind::DpmPp2M"
        lines.append("#[test]")
        lines.append(f"fn golden_{kind.replace('+', 'p')}_{name}() {{")
        lines.append(f'    golden({kind_rs}, "{cj}", {steps}, &[{ts}], &[{tr}]);')
        lines.append("}")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--init-noise")
    ap.add_argument("--out")
    ap.add_argument("--adapter", action="append", default=[], help="DIR:W:COND.png")
    ap.add_argument("--features-of", help="DIR:W1:C1.png,W2:C2.png — one adapter fed the weighted sum of conditions")
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--adapter-conditioning-factor", type=float, default=1.0)
    ap.add_argument("--check-prep")
    ap.add_argument("--dataset")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="max |prep - reference| per pixel (fp16 pipelines: a value that lands on the other "
                         "side of a float16 rounding boundary moves a pixel by ~4e-4 per step, so use 3e-3)")
    ap.add_argument("--fed-sum", action="store_true",
                    help="with --check-prep: the reference runs ONE adapter on sum(w_k * C_k)")
    ap.add_argument("--scheduler-goldens")
    a = ap.parse_args()
    if a.scheduler_goldens:
        scheduler_goldens(a.scheduler_goldens)
        return
    if a.check_prep:
        check_prep(a)
        return
    pipe = Pipeline(a.pipeline)
    adapters = []
    for spec in a.adapter:
        d, w, c = spec.rsplit(":", 2)
        sess, meta = adapter_session(d)
        adapters.append((sess, float(w), load_condition(c, meta.get("in_channels", 3))))
    features = None
    if a.features_of:
        d, rest = a.features_of.split(":", 1)
        sess, meta = adapter_session(d)
        cond = None
        for part in rest.split(","):
            w, c = part.split(":")
            x = float(w) * load_condition(c, meta.get("in_channels", 3))
            cond = x if cond is None else cond + x
        features = run(sess, [f"features_{k}" for k in range(4)], {"condition": cond.astype(np.float32)})
    noise = np.load(a.init_noise)
    img = pipe.generate(a.prompt, noise, a.scheduler, a.steps, a.guidance, adapters,
                        a.adapter_conditioning_factor, features)
    np.save(a.out, img.astype(np.float32))


if __name__ == "__main__":
    main()
