"""tiny-dream: a small latent diffusion model in Stable Diffusion's format, trained on the world.

Latent diffusion (Rombach et al. 2022) at toy scale, trained in stages that each checkpoint
and resume:

1. ``renders``: the world's photos (typical coats, lit by their scene), every class on every
   background, random scale and placement (made by :func:`dreamshift.compose.runner.compose`:
   cached and resumable). img2img of a paste guide then moves it toward a photo;
2. ``vae``: an ``AutoencoderKL`` from 64x64x3 pixels to 16x16x4 latents, trained on 32x32
   crops (4x cheaper) with a pixel MSE and a small KL term (the paper adds perceptual and
   adversarial losses);
3. ``unet``: a ``UNet2DConditionModel`` and a ``CLIPTextModel`` trained together on the
   encoded renders with the DDPM noise-prediction loss (Ho et al. 2020), Min-SNR weighting
   (Hang et al. 2023), the loss weighted ``box_weight`` times more inside the animal's paste
   box (the background is ~75 % of the latent and carries no class), an EMA of the weights,
   and the prompt dropped for 10 % of the samples so that classifier-free guidance works
   (Ho & Salimans 2022). Prompts come from the D3S recipe (class, definition, background) and
   the ImageNet-G templates (class only);
4. ``decoder``: the VAE decoder fine-tuned on whole 64x64 images with the encoder frozen (the
   crops leave it 3 dB short on whole images), as Stable Diffusion's ft-MSE VAE was: the latents,
   and so the UNet, stay valid.

The result is saved with ``save_pretrained`` and loads with ``StableDiffusionPipeline`` and
``StableDiffusionImg2ImgPipeline``. Every random draw of step ``s`` comes from a generator seeded
by ``(seed, stage, s)``, so a resumed run computes exactly what an uninterrupted one does.

Run it with ``dreamshift world train-dream --out DIR`` (about an hour on 2 CPU cores).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamshift.config import Config
from dreamshift.data.transforms import Preprocessing
from dreamshift.errors import DreamshiftError
from dreamshift.seeding import derive_seed
from dreamshift.train.loop import TrainState, fit_steps
from dreamshift.train.schedules import warmup_cosine_lr
from dreamshift.world.animals import CLASSES
from dreamshift.world.backgrounds import BACKGROUNDS

SIZE, LATENT_SIZE = 64, 16
MAX_TOKENS = 32  # every world prompt fits; longer prompts are cut, as CLIP cuts at 77
PROMPT_RECIPES = ("d3s", "imagenet-g")


@dataclass(frozen=True)
class TrainDreamConfig(Config):
    """What decides the trained weights. The defaults are the shipped model's (about an hour on
    two CPU cores)."""

    seed: int = 0
    train_renders: int = 30000
    test_per_group: int = 3  # held-out renders (unseen silhouettes) per class x background
    vae_steps: int = 2500
    vae_batch: int = 32
    vae_crop: int = 32  # the VAE is convolutional: it trains on crops, 4x cheaper than 64x64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-7
    decoder_steps: int = 500  # then the decoder alone, on whole 64x64 images
    decoder_batch: int = 16
    decoder_lr: float = 3e-4
    unet_steps: int = 3000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    uncond_prob: float = 0.1  # prompt dropout, for classifier-free guidance
    template_prob: float = 0.25  # share of prompts from the class-only ImageNet-G templates
    snr_gamma: float = 5.0
    box_weight: float = 4.0  # loss weight of the latent cells inside the animal's box (1 outside)
    ema_decay: float = 0.998
    warmup_steps: int = 200
    checkpoint_every: int = 250

    def validate(self) -> None:
        for name in ("train_renders", "vae_steps", "vae_batch", "unet_steps", "unet_batch"):
            if getattr(self, name) < 1:
                raise DreamshiftError(f"train-dream: {name} must be at least 1")
        if self.vae_crop % 4 or not 8 <= self.vae_crop <= SIZE:
            raise DreamshiftError(f"train-dream: vae_crop must be a multiple of 4 in 8..{SIZE}")
        if not 0 <= self.uncond_prob < 1 or not 0 <= self.template_prob < 1:
            raise DreamshiftError("train-dream: uncond_prob and template_prob must be in [0, 1)")


# ---------------------------------------------------------------------------------- components


def prompt_words() -> list[str]:
    """Every word of the world's prompts: class names, background phrases, definitions and
    template words of the shipped recipes, in first-seen order."""
    from dreamshift.dream.prompts import load_recipe

    text = " ".join([*CLASSES, *BACKGROUNDS])
    for name in PROMPT_RECIPES:
        r = load_recipe(name)
        text += " ".join(["", *r.templates, *r.backgrounds.values(), *r.definitions.values()])
    words = re.findall(r"[a-z]+", re.sub(r"\$\{\w+\}", " ", text.lower()))
    return list(dict.fromkeys(words))


def world_prompts() -> list[str]:
    """All prompts tiny-dream is trained on: ``""`` (unconditional) first, then the D3S prompt
    of every (class, background), then every ImageNet-G template of every class."""
    from dreamshift.dream.prompts import load_recipe

    d3s, templates = (load_recipe(n) for n in PROMPT_RECIPES)
    prompts = [""]
    prompts += [d3s.render(0, c, b) for c in CLASSES for b in BACKGROUNDS]
    n = len(templates.templates)
    prompts += [templates.render(i, c, None) for c in CLASSES for i in range(n)]
    return prompts


def build_components(tokenizer_dir: Path, seed: int) -> dict[str, Any]:
    """Untrained tokenizer, text encoder, VAE and UNet of tiny-dream (deterministic for seed)."""
    from dreamshift.models.diffusion import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dreamshift.models.tiny_sd import write_byte_bpe_tokenizer

    tokenizer = CLIPTokenizer.from_pretrained(
        write_byte_bpe_tokenizer(tokenizer_dir, prompt_words(), MAX_TOKENS)
    )
    torch.manual_seed(derive_seed(seed, "text_encoder"))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(derive_seed(seed, "vae"))
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),  # two downsamplings: 64x64 -> 16x16
        layers_per_block=1,
        latent_channels=4,
        sample_size=SIZE,
    )
    torch.manual_seed(derive_seed(seed, "unet"))
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),  # 16x16, 8x8, 4x4: the parameters sit where it is cheap
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=4,  # read as the number of heads, as in Stable Diffusion 1.x configs
    )
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet}


NOISE_SCHEDULE = {  # Stable Diffusion 1.x's: scaled linear betas over 1000 steps
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "steps_offset": 1,
}


# ------------------------------------------------------------------------------------ data


def render_world(
    out: Path,
    seed: int,
    train_renders: int,
    test_per_group: int,
    workers: int = 2,
    progress: bool = True,
    render: str = "photo",
    coat: str = "typical",
) -> Path:
    """World renders composed into ``out`` (cached, resumable): ``train_renders`` of train
    silhouettes and ``test_per_group`` of test silhouettes per class x background, every class
    on every background as often, scale 0.3-0.7 and rotation; ``render`` photo or paste,
    ``coat`` typical or random. They train tiny-dream and the oracles; paste renders are the
    guides of ``evaluate-dream``, photo renders its real images."""
    from dreamshift.compose.config import ComposeConfig, Placement, ShiftRecipe
    from dreamshift.compose.runner import compose

    compose_cfg = ComposeConfig(
        seed=seed,
        size=SIZE,
        coat=coat,
        render=render,
        placement=Placement(scale=(0.3, 0.7), max_rotation=15.0),
        recipe=ShiftRecipe(
            rho=1 / len(BACKGROUNDS),  # the assigned background is as frequent as any other
            train_size=train_renders,
            val_per_group=0,
            test_per_group=test_per_group,
            anti_per_group=0,
        ),
        shard_size=1000,
    )
    compose(compose_cfg, out, workers=workers, progress=progress)
    return out


def load_renders(root: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images (N, 64, 64, 3) uint8, fg class index (N,), bg class index (N,), paste boxes
    (N, 4) as x, y, w, h in pixels) of one split."""
    from PIL import Image

    from dreamshift.data import dataset as ds

    rows = [
        r
        for r in ds.read_manifest(root).to_pylist()
        if r["status"] == ds.OK and r["split"] == split
    ]
    if not rows:
        raise DreamshiftError(f"{root} has no usable {split} renders")
    images = np.stack([np.asarray(Image.open(root / r["path"]).convert("RGB")) for r in rows])
    fg = np.array([CLASSES.index(r["fg_class"]) for r in rows])
    bg = np.array([BACKGROUNDS.index(r["bg_class"]) for r in rows])
    boxes = np.array([[r["box_x"], r["box_y"], r["box_w"], r["box_h"]] for r in rows])
    return images, fg, bg, boxes


def box_weights(boxes: np.ndarray, inside: float, side: int = LATENT_SIZE) -> Any:
    """Per-cell loss weights (N, 1, side, side): ``inside`` on the latent cells a paste box
    touches, 1 elsewhere; boxes are in pixels of the SIZE x SIZE image."""
    import torch

    k = side / SIZE
    w = torch.ones(len(boxes), 1, side, side)
    for i, (x, y, bw, bh) in enumerate(boxes.tolist()):
        x0, y0 = int(x * k), int(y * k)
        x1, y1 = math.ceil((x + bw) * k), math.ceil((y + bh) * k)
        w[i, :, max(0, y0) : min(side, y1), max(0, x0) : min(side, x1)] = inside
    return w


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return 10 * math.log10(4.0 / max(mse, 1e-12))


# -------------------------------------------------------------------------------- training


def train_vae(
    vae: Any,
    images: Any,
    held_out: Any,
    cfg: TrainDreamConfig,
    ckpt: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the autoencoder on crops of ``images`` ((N, 3, 64, 64) in [-1, 1])."""
    import torch

    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    c = cfg.vae_crop

    def step_fn(step: int, g: Any) -> float:
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g)
        corner = torch.randint(SIZE - c + 1, (cfg.vae_batch, 2), generator=g).tolist()
        x = torch.stack(
            [images[i, :, t : t + c, s : s + c] for i, (t, s) in zip(idx, corner, strict=True)]
        )
        flip = torch.rand(cfg.vae_batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup_steps)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=g)).sample
        mse = torch.nn.functional.mse_loss(rec, x)
        loss = mse + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return mse.item()

    vae.train()
    step, losses = fit_steps(
        "vae", cfg.vae_steps, step_fn, cfg.seed, TrainState(model=vae, optimizer=opt), ckpt,
        cfg.checkpoint_every, progress, stop_after, metric="mse",
    )  # fmt: skip
    vae.eval()
    return {"steps": step, "final_mse": float(np.mean(losses[-100:])) if losses else None,
            "held_out_psnr": reconstruction_psnr(vae, held_out)}  # fmt: skip


def reconstruction_psnr(vae: Any, images: Any, batch: int = 100) -> float:
    """PSNR of the autoencoder's reconstruction (posterior mean) of ``images``."""
    import torch

    rec = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            rec.append(vae.decode(vae.encode(x).latent_dist.mode()).sample)
    return psnr(torch.cat(rec), images)


def finetune_decoder(
    vae: Any,
    images: Any,
    held_out: Any,
    cfg: TrainDreamConfig,
    ckpt: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the decoder (and its input convolution) on whole images; the encoder is frozen."""
    import torch

    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    total, warmup = cfg.decoder_steps, min(cfg.warmup_steps, cfg.decoder_steps // 10 + 1)

    def step_fn(step: int, g: Any) -> float:
        x = images[torch.randint(len(images), (cfg.decoder_batch,), generator=g)]
        flip = torch.rand(cfg.decoder_batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, total, cfg.decoder_lr, warmup)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator=g)
        mse = torch.nn.functional.mse_loss(vae.decode(z).sample, x)
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
        return mse.item()

    step, _ = fit_steps(
        "decoder", total, step_fn, cfg.seed, TrainState(model=vae, optimizer=opt), ckpt,
        cfg.checkpoint_every, progress, stop_after, metric="mse",
    )  # fmt: skip
    return {"steps": step, "held_out_psnr": reconstruction_psnr(vae, held_out)}


def encode_latents(vae: Any, images: Any, batch: int = 100) -> tuple[Any, Any]:
    """Posterior mean and standard deviation of every image: (N, 4, 16, 16) each."""
    import torch

    means, stds = [], []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            dist = vae.encode(images[i : i + batch]).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(
    parts: dict[str, Any],
    latents: tuple[Any, Any],
    labels: tuple[np.ndarray, np.ndarray],
    boxes: np.ndarray,
    cfg: TrainDreamConfig,
    ckpt: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train the UNet and the text encoder together on scaled latents; returns its record.
    On return the models hold the EMA weights."""
    import torch
    from diffusers import DDPMScheduler

    unet, text_encoder, tokenizer = parts["unet"], parts["text_encoder"], parts["tokenizer"]
    prompts = world_prompts()
    ids = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    n_cls, n_bg = len(CLASSES), len(BACKGROUNDS)
    n_templates = (len(prompts) - 1 - n_cls * n_bg) // n_cls
    fg = torch.from_numpy(labels[0])
    bg = torch.from_numpy(labels[1])
    means, stds = latents
    cell_weight = box_weights(boxes, cfg.box_weight)
    scheduler: Any = DDPMScheduler(**NOISE_SCHEDULE)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight_of_t = torch.clamp(snr, max=cfg.snr_gamma) / snr  # Min-SNR-gamma, epsilon target

    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]

    def step_fn(step: int, g: Any) -> float:
        b = cfg.unet_batch
        idx = torch.randint(len(means), (b,), generator=g)
        z0 = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * parts[
            "scaling_factor"
        ]
        # prompt per sample: empty, a class-only template, or the D3S (class, background) one
        u = torch.rand(b, generator=g)
        template = torch.randint(n_templates, (b,), generator=g)
        d3s_index = 1 + fg[idx] * n_bg + bg[idx]
        template_index = 1 + n_cls * n_bg + fg[idx] * n_templates + template
        prompt_index = torch.where(u < cfg.template_prob + cfg.uncond_prob, template_index,
                                   d3s_index)  # fmt: skip
        prompt_index = torch.where(u < cfg.uncond_prob, 0, prompt_index)
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(scheduler.config.num_train_timesteps, (b,), generator=g)
        noisy = scheduler.add_noise(z0, noise, t)
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg.unet_steps, cfg.unet_lr, cfg.warmup_steps)
        cond = text_encoder(ids[prompt_index])[0]
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        w = cell_weight[idx]
        per_sample = (((pred - noise) ** 2) * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * 4)
        loss = (per_sample * weight_of_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                e.lerp_(p.detach(), 1 - decay)
        return per_sample.mean().item()

    unet.train()
    text_encoder.train()
    state = TrainState(unet=unet, text_encoder=text_encoder, optimizer=opt, ema=ema)
    step, losses = fit_steps(
        "unet", cfg.unet_steps, step_fn, cfg.seed, state, ckpt, cfg.checkpoint_every, progress,
        stop_after,
    )  # fmt: skip
    with torch.no_grad():
        for e, p in zip(ema, params, strict=True):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    return {"steps": step, "final_loss": float(np.mean(losses[-200:])) if losses else None}


def assemble_pipeline(parts: dict[str, Any]) -> Any:
    """The trained parts as a ``StableDiffusionPipeline`` with Stable Diffusion's DDIM sampler."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=parts["vae"],
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=parts["unet"],
        scheduler=DDIMScheduler(**NOISE_SCHEDULE, set_alpha_to_one=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def train_tiny_dream(
    out: str | Path,
    cfg: TrainDreamConfig | None = None,
    workers: int = 2,
    progress: bool = True,
    stop_after: dict[str, int] | None = None,
    log: Any = print,
) -> Path | None:
    """Run (or resume) every stage and save the pipeline to ``out/pipeline``; returns its path,
    or None when ``stop_after`` (``{stage: steps}`` for ``vae``, ``unet`` or ``decoder``)
    stopped a stage early."""
    import torch

    cfg = cfg or TrainDreamConfig()
    cfg.check()
    out = Path(out)
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    config_file = out / "train_config.json"
    if config_file.is_file():
        before = json.loads(config_file.read_text())
        if before != asdict(cfg):
            raise DreamshiftError(
                f"{out} holds a training run with another config ({config_file}): resume it "
                "with the same settings, or use a new --out"
            )
    else:
        config_file.write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    stop_after = stop_after or {}
    started = time.perf_counter()

    renders = render_world(
        out / "renders", cfg.seed, cfg.train_renders, cfg.test_per_group, workers
    )
    train_images, fg, bg, boxes = load_renders(renders, "train")
    test_images = load_renders(renders, "test")[0]
    to_tensor = Preprocessing.world(SIZE)  # [-1, 1], as Stable Diffusion's VAE expects
    x_train, x_test = to_tensor(train_images), to_tensor(test_images)
    log(f"renders: {len(x_train)} train, {len(x_test)} held-out")

    parts = build_components(out / "tokenizer", cfg.seed)
    record: dict[str, Any] = {"config": asdict(cfg), "threads": torch.get_num_threads()}
    record["vae"] = train_vae(
        parts["vae"],
        x_train,
        x_test,
        cfg,
        ckpts / "vae.safetensors",
        progress,
        stop_after.get("vae"),
    )
    if record["vae"]["steps"] < cfg.vae_steps:
        return None
    log(f"vae: held-out reconstruction PSNR {record['vae']['held_out_psnr']:.2f} dB")
    means, stds = encode_latents(parts["vae"], x_train)
    scaling = float(1.0 / means.std())
    parts["vae"].register_to_config(scaling_factor=scaling)
    parts["scaling_factor"] = scaling
    record["vae"]["scaling_factor"] = scaling
    record["unet"] = train_unet(
        parts,
        (means, stds),
        (fg, bg),
        boxes,
        cfg,
        ckpts / "unet.safetensors",
        progress,
        stop_after.get("unet"),
    )
    if record["unet"]["steps"] < cfg.unet_steps:
        return None
    record["decoder"] = finetune_decoder(
        parts["vae"], x_train, x_test, cfg, ckpts / "decoder.safetensors", progress,
        stop_after.get("decoder"),
    )  # fmt: skip
    if record["decoder"]["steps"] < cfg.decoder_steps:
        return None
    log(f"decoder: held-out reconstruction PSNR {record['decoder']['held_out_psnr']:.2f} dB")
    pipeline_dir = out / "pipeline"
    assemble_pipeline(parts).save_pretrained(pipeline_dir, safe_serialization=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["parameters"] = {
        name: sum(p.numel() for p in parts[name].parameters())
        for name in ("unet", "vae", "text_encoder")
    }
    (out / "train_record.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"tiny-dream saved to {pipeline_dir} ({record['seconds']:.0f} s)")
    return pipeline_dir
