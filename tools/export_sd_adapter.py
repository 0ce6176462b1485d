#!/usr/bin/env python3
"""Export a diffusers Stable Diffusion 1.x pipeline + T2I-Adapter checkpoints into the
on-disk contract of `prep generate` (README "prep generate").

  export_sd_adapter.py --model DIR_OR_ID --out PIPELINE_DIR
  export_sd_adapter.py --adapter DIR_OR_ID --condition depth [--in-channels 3] [--weight 1.0] --out ADAPTER_DIR

Optional tool (needs torch, diffusers, transformers, onnx); the tests do not use it. The
UNet is exported with the extra inputs adapter_res_0..3, passed to diffusers as
`down_intrablock_additional_residuals` (what StableDiffusionAdapterPipeline does), so a
UNet run with zeros there equals the plain UNet.
"""
import argparse
import json
import os

import torch


def export(module, args, path, input_names, output_names, dynamic_axes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(module, args, path, input_names=input_names, output_names=output_names,
                      dynamic_axes=dynamic_axes, opset_version=17, do_constant_folding=True)


class UNetWithAdapterInputs(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, r0, r1, r2, r3):
        return self.unet(sample, timestep, encoder_hidden_states,
                         down_intrablock_additional_residuals=[r0, r1, r2, r3], return_dict=False)[0]


class VaeDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


class VaeEncoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample, return_dict=False)[0].mean


class TextEncoder(torch.nn.Module):
    def __init__(self, te):
        super().__init__()
        self.te = te

    def forward(self, input_ids):
        return self.te(input_ids, return_dict=False)[0]


class Adapter(torch.nn.Module):
    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter

    def forward(self, condition):
        return tuple(self.adapter(condition))


@torch.no_grad()
def export_pipeline(model, out, size=512, fp16=False):
    from diffusers import StableDiffusionPipeline

    dt = torch.float16 if fp16 else torch.float32
    # fp16 exports trace on the GPU (half-precision CPU kernels are incomplete in torch).
    dev = "cuda" if fp16 else "cpu"
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=dt, safety_checker=None).to(dev)
    h = size // 8
    ids = torch.zeros((1, 77), dtype=torch.int64, device=dev)
    export(TextEncoder(pipe.text_encoder), (ids,), f"{out}/text_encoder/model.onnx", ["input_ids"],
           ["last_hidden_state"], {"input_ids": {0: "B"}, "last_hidden_state": {0: "B"}})
    unet = pipe.unet
    chans = list(unet.config.block_out_channels) + [unet.config.block_out_channels[-1]]
    chans = chans[:4]
    res = tuple(torch.zeros((2, c, h >> k, h >> k), dtype=dt, device=dev) for k, c in enumerate(chans))
    d = unet.config.cross_attention_dim
    args = (torch.randn(2, 4, h, h, dtype=dt, device=dev), torch.tensor([999, 999], dtype=torch.int64, device=dev),
            torch.randn(2, 77, d, dtype=dt, device=dev)) + res
    names = ["sample", "timestep", "encoder_hidden_states"] + [f"adapter_res_{k}" for k in range(4)]
    dyn = {"sample": {0: "B", 2: "h", 3: "w"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"},
           "out_sample": {0: "B", 2: "h", 3: "w"}}
    for k in range(4):
        dyn[f"adapter_res_{k}"] = {0: "B", 2: f"h{k}", 3: f"w{k}"}
    export(UNetWithAdapterInputs(unet), args, f"{out}/unet/model.onnx", names, ["out_sample"], dyn)
    export(VaeDecoder(pipe.vae), (torch.randn(1, 4, h, h, dtype=dt, device=dev),), f"{out}/vae_decoder/model.onnx", ["latent_sample"],
           ["sample"], {"latent_sample": {0: "B", 2: "h", 3: "w"}, "sample": {0: "B", 2: "H", 3: "W"}})
    export(VaeEncoder(pipe.vae), (torch.randn(1, 3, size, size, dtype=dt, device=dev),), f"{out}/vae_encoder/model.onnx", ["sample"],
           ["latent_sample"], {"sample": {0: "B", 2: "H", 3: "W"}, "latent_sample": {0: "B", 2: "h", 3: "w"}})
    with open(f"{out}/vae_decoder/config.json", "w") as f:
        json.dump({"scaling_factor": pipe.vae.config.scaling_factor,
                   "block_out_channels": list(pipe.vae.config.block_out_channels),
                   "latent_channels": pipe.vae.config.latent_channels}, f, indent=2)
    pipe.tokenizer.save_pretrained(f"{out}/tokenizer")
    pipe.scheduler.save_config(f"{out}/scheduler")
    print(f"exported {model} to {out}")


@torch.no_grad()
def export_adapter(src, out, condition, in_channels, weight, size=512, fp16=False):
    from diffusers import T2IAdapter

    dt = torch.float16 if fp16 else torch.float32
    dev = "cuda" if fp16 else "cpu"
    adapter = T2IAdapter.from_pretrained(src, torch_dtype=dt).to(dev)
    export(Adapter(adapter), (torch.rand(1, in_channels, size, size, dtype=dt, device=dev),), f"{out}/model.onnx", ["condition"],
           [f"features_{k}" for k in range(4)],
           {"condition": {0: "B", 2: "H", 3: "W"}, **{f"features_{k}": {0: "B", 2: f"h{k}", 3: f"w{k}"} for k in range(4)}})
    with open(f"{out}/adapter.toml", "w") as f:
        f.write(f'condition = "{condition}"\nin_channels = {in_channels}\nweight = {weight}\n')
    print(f"exported {src} to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--adapter")
    ap.add_argument("--condition", default="depth")
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fp16", action="store_true",
                    help="float16 weights and I/O (for --device cuda; traced on a CUDA GPU)")
    a = ap.parse_args()
    if a.model:
        export_pipeline(a.model, a.out, a.size, a.fp16)
    elif a.adapter:
        export_adapter(a.adapter, a.out, a.condition, a.in_channels, a.weight, a.size, a.fp16)
    else:
        ap.error("give --model or --adapter")


if __name__ == "__main__":
    main()
