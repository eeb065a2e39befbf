"""Benchmark: optimizer steps/s of `dreamshift tune` (LoRA) against a bare training loop in the
style of diffusers' examples/dreambooth/train_dreambooth_lora.py.

Both fine-tune the same model (tiny-dream, or --model) with LoRA of the same rank on the same
attention projections, the same batch size and images, AdamW, on the CPU. The bare loop, as the
example does, encodes the batch with the VAE and the prompts with the text encoder at every
step, then noise, UNet, MSE, backward, gradient clipping, step. `tune` does everything a run
does: selects the instances, hashes the model, loads it, caches the latents' moments and the
prompt embeddings once, seeds every step, checkpoints, and saves the adapter in diffusers'
format. Printed: steps/s of each (best of interleaved repeats) and their ratio (aim >= 0.9),
for `tune`'s training loop alone and for the whole call. Run: `make bench-tune` or
`.venv/bin/python bench/tune.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.models.diffusion import locate_model, quiet_libraries
from dreamshift.tune.config import UNET_TARGETS, TuneConfig
from dreamshift.tune.run import SUMMARY, tune


def bare_loop(model: Path, pixels: torch.Tensor, prompts: list[str], batch: int, steps: int,
              rank: int) -> float:  # fmt: skip
    """The example's loop; returns the seconds of ``steps`` steps (loading excluded)."""
    quiet_libraries()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model / "text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(model / "vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(model / "unet").requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(model / "scheduler")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=list(UNET_TARGETS)))  # fmt: skip
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    ids = tokenizer(
        prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(pixels), (batch,))
        latents = vae.encode(pixels[idx]).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        noisy = scheduler.add_noise(latents, noise, t)
        text = text_encoder(ids[idx])[0]
        pred = unet(noisy, t, text).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-dream")
    parser.add_argument("--images", type=int, default=64, help="instance images (64)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = locate_model(args.model).path
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        recipe = ShiftRecipe(rho=0.1, train_size=args.images, val_per_group=0,
                             test_per_group=0, anti_per_group=0)  # fmt: skip
        compose(ComposeConfig(recipe=recipe, render="photo"), root, progress=False)
        rows = [r for r in ds.read_manifest(root).to_pylist() if r["split"] == "train"]
        images = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        prompts = [f"a photo of a {r['fg_class']}" for r in rows]
        print(
            f"{len(rows)} instance images of 64x64, {args.model}, LoRA rank {args.rank}, batch "
            f"{args.batch}, {args.steps} steps, {torch.get_num_threads()} threads"
        )
        bare, loop, whole = [], [], []
        for k in range(args.repeats):
            bare.append(bare_loop(model, pixels, prompts, args.batch, args.steps, args.rank))
            cfg = TuneConfig(model=args.model, steps=args.steps, batch_size=args.batch,
                             rank=args.rank, checkpoint_every=args.steps, seed=k)  # fmt: skip
            start = time.perf_counter()
            folder = tune(root, Path(tmp) / "runs", cfg, progress=False, log=lambda *_: None)
            whole.append(time.perf_counter() - start)
            loop.append(json.loads((folder / SUMMARY).read_text())["seconds"])
        b, lo, wh = args.steps / min(bare), args.steps / min(loop), args.steps / min(whole)
        print(f"bare example-style loop      {b:6.2f} steps/s")
        print(f"dreamshift tune, train loop  {lo:6.2f} steps/s   ratio {lo / b:.2f}")
        print(f"dreamshift tune, end to end  {wh:6.2f} steps/s   ratio {wh / b:.2f}")


if __name__ == "__main__":
    main()
