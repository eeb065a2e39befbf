"""Benchmark for a CUDA machine, one table: dreamshift against bare loops on the same GPU.

1. dream: a Stable Diffusion 1.5-shaped pipeline (full size, random weights:
   dreamshift.models.sd_shapes), float16, batch 8, 512 x 512, 20 DDIM steps, txt2img, against
   a bare diffusers ``StableDiffusionPipeline`` loop; dreamshift with SDPA and channels-last
   (its defaults on CUDA), batch-invariant off (throughput), then with ``torch.compile``;
   images/s, ratio and peak GPU memory.
2. tune: LoRA (rank 16) steps/s at 512 x 512, batch 4, against the bare loop of diffusers'
   train_dreambooth_lora.py example (VAE and text encoder at every step, as it does).
3. learn: ResNet-50 (torchvision's architecture, random weights in a local file, fine-tuned
   in full) images/s at 224 x 224, batch 128, against a bare CUDA loop on pre-decoded tensors.

It refuses to run without CUDA. Run: `.venv/bin/python bench/gpu.py` on the device machine
(about 6 minutes on an H100).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.models.diffusion import Dreamer, Request, quiet_libraries, resolve_scheduler
from dreamshift.models.sd_shapes import write_random_pipeline
from dreamshift.world.animals import CLASSES


def _timed(fn, *args) -> tuple[float, float]:
    """Seconds of ``fn(*args)`` (CUDA synchronised) and the peak GPU memory in GB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn(*args)
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 1e9


def dream_rows(model: Path, batch: int, steps: int, side: int) -> list[tuple[str, float, float]]:
    quiet_libraries()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    prompts = ["a photo of a zebra on snow"] * batch
    pipe = StableDiffusionPipeline.from_pretrained(
        model, torch_dtype=torch.float16, safety_checker=None, requires_safety_checker=False
    ).to("cuda")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def bare() -> None:
        pipe(prompts, num_inference_steps=steps, width=side, height=side, output_type="np")

    bare()  # warm-up
    rows = [("dream, bare diffusers loop", *_timed(bare))]
    name, config = resolve_scheduler(model, "ddim")
    runtime = {"device": "cuda", "dtype": "float16"}
    for compiled in (False, True):
        dreamer = Dreamer(model, "txt2img", name, config, runtime, batch_invariant=False,
                          compile=compiled)  # fmt: skip
        requests = [Request(p, "", seed=i) for i, p in enumerate(prompts)]

        def ours(dreamer=dreamer, requests=requests) -> None:
            dreamer.generate(requests, steps, 1.0, 7.5, side, side)

        ours()  # warm-up (and compilation)
        label = "dream, dreamshift" + (" + torch.compile" if compiled else "")
        rows.append((label, *_timed(ours)))
    return [(label, batch / seconds, memory) for label, seconds, memory in rows]


def tune_rows(model: Path, root: Path, steps: int, batch: int, side: int) -> list[tuple]:
    quiet_libraries()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    from dreamshift.tune.config import UNET_TARGETS, TuneConfig
    from dreamshift.tune.run import tune

    dev, f32 = "cuda", torch.float32
    tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer")
    text = CLIPTextModel.from_pretrained(model / "text_encoder").to(dev, f32).requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(model / "vae").to(dev, f32).requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(model / "unet").to(dev, f32).requires_grad_(False)
    sched = DDPMScheduler.from_pretrained(model / "scheduler")
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                target_modules=list(UNET_TARGETS)))  # fmt: skip
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    pixels = torch.rand(batch, 3, side, side, device=dev) * 2 - 1
    ids = tokenizer(["a photo of a zebra"] * batch, padding="max_length", max_length=77,
                    return_tensors="pt").input_ids.to(dev)  # fmt: skip

    def bare() -> None:
        for _ in range(steps):
            with torch.autocast("cuda", torch.bfloat16):
                latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                t = torch.randint(0, 1000, (batch,), device=dev)
                pred = unet(sched.add_noise(latents, noise, t), t, text(ids)[0]).sample
            torch.nn.functional.mse_loss(pred.float(), noise.float()).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    bare_s, bare_mem = _timed(bare)
    cfg = TuneConfig(model=str(model), method="lora", rank=16, alpha=16, steps=steps,
                     batch_size=batch, resolution=side, device="cuda")  # fmt: skip
    ours_s, ours_mem = _timed(lambda: tune(root, root.parent / "tune-runs", cfg, progress=False))
    return [("tune LoRA, bare example loop", steps / bare_s, bare_mem),
            ("tune LoRA, dreamshift (whole call)", steps / ours_s, ours_mem)]  # fmt: skip


def learn_rows(root: Path, epochs: int, batch: int) -> list[tuple]:
    import torchvision
    from PIL import Image

    from dreamshift.learn.run import LearnConfig, learn
    from dreamshift.train.checkpoint import load_state

    weights = root.parent / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    rows = [r for r in ds.read_manifest(root).to_pylist() if r["split"] == "train"]
    pixels = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255).cuda()
    x = torch.nn.functional.interpolate(x, size=224, mode="bilinear", antialias=True)
    y = torch.randint(0, 9, (len(x),), device="cuda")
    net = torchvision.models.resnet50(num_classes=9).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    steps = len(x) // batch

    def bare() -> None:
        for _ in range(epochs):
            order = torch.randperm(len(x), device="cuda")
            for s in range(steps):
                idx = order[s * batch : (s + 1) * batch]
                with torch.autocast("cuda", torch.bfloat16):
                    loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    bare_s, bare_mem = _timed(bare)
    cfg = LearnConfig(finetune="full", model=f"torchvision:resnet50@{weights}", epochs=epochs,
                      batch_size=batch, eval_splits=(), val_split="",
                      mixed_precision="bf16")  # fmt: skip
    _, ours_mem = _timed(lambda: learn(root, root.parent / "learn-runs", cfg,
                                       log=lambda *_: None, loader_workers=8))  # fmt: skip
    (folder,) = (root.parent / "learn-runs").glob("erm-*")
    ours = max(h["train_images_per_s"] for h in load_state(folder / "checkpoint.safetensors")
               ["history"])  # fmt: skip
    return [("learn ResNet-50 bf16, bare CUDA loop", steps * batch * epochs / bare_s, bare_mem),
            ("learn ResNet-50 bf16, dreamshift", ours, ours_mem)]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dream-steps", type=int, default=20)
    parser.add_argument("--tune-steps", type=int, default=30)
    parser.add_argument("--learn-images", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py needs CUDA: run it on a device machine", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_pipeline("sd15", Path(tmp) / "sd15")
        root = Path(tmp) / "world"
        recipe = ShiftRecipe(train_size=args.learn_images, val_per_group=0, test_per_group=0,
                             anti_per_group=0)  # fmt: skip
        classes = tuple(c for c in CLASSES if c != "giraffe")  # ImageNet-1k has no giraffe
        compose(ComposeConfig(size=256, classes=classes, recipe=recipe), root, workers=8,
                progress=False)  # fmt: skip
        rows = dream_rows(model, batch=8, steps=args.dream_steps, side=512)
        rows += tune_rows(model, root, steps=args.tune_steps, batch=4, side=512)
        rows += learn_rows(root, epochs=2, batch=128)
    print(f"{'':44s} {'per s':>9s} {'ratio':>6s} {'peak GB':>8s}")
    base = None
    for label, rate, memory in rows:
        base = rate if "bare" in label else base
        ratio = f"{rate / base:6.2f}" if base and "bare" not in label else "     1"
        print(f"{label:44s} {rate:9.2f} {ratio} {memory:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
