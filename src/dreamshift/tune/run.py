"""``dreamshift tune``: fine-tune a Stable Diffusion model on a few instance images, as LoRA
adapters (DataDream, Kim et al. 2024) or as a whole UNet (DreamBooth, Ruiz et al. 2023).

The training step is diffusers' ``examples/dreambooth/train_dreambooth(_lora).py``: latents of
the instance images, noise at a uniformly drawn timestep, the UNet's prediction against the
noise (or the velocity) in mean squared error; with a prior dataset, class images join each
batch and their loss is added with ``prior_weight`` (prior preservation); ``snr_gamma`` weights
each sample by min(SNR, γ)/SNR (Min-SNR, Hang et al. 2023; the weights are taken over the
instance half of the batch only, where the example takes them over the whole batch).

A run's folder, ``OUT/<method>-<hash>``, is named by the config's non-default fields, the
model's hash and the chosen images' hashes. It holds ``config.json`` (with the chosen sample
ids), ``checkpoint.safetensors`` every ``checkpoint_every`` steps (step ``s`` draws from its own
seeded generator, so a relaunch resumes to the same weights on a CPU; CUDA kernels such as cuDNN's
weight gradients are not deterministic, so there a resumed run agrees only to rounding), and
once finished ``done`` and
the result in diffusers' own format: ``pytorch_lora_weights.safetensors`` (loadable by
``pipe.load_lora_weights(folder)``; with ``per_class`` one folder per class under
``adapters/``) or a full model folder ``model/`` (``--model RUN/model`` for dream). Each
finished run appends a record with its losses and time to ``OUT/results.jsonl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamshift.data import dataset as ds
from dreamshift.data.images import IMAGE_SUFFIXES, sha256_file, write_atomic
from dreamshift.data.loading import iter_batches, usable_rows
from dreamshift.engine.results import RESULTS, append_record
from dreamshift.errors import DreamshiftError
from dreamshift.folders import mark_folder
from dreamshift.models.diffusion import (
    ADAPTERS_DIR,
    TUNE_DONE,
    TUNE_RUN,
    TUNED_MODEL,
    hash_model,
    is_sdxl,
    locate_model,
    quiet_libraries,
    resolve_runtime,
)
from dreamshift.models.loading import classifier_fingerprint, load_classifier
from dreamshift.portable import portable_record
from dreamshift.seeding import derive_seed
from dreamshift.train.distributed import Processes, processes
from dreamshift.train.loop import TrainState, fit_steps
from dreamshift.train.run_folder import CHECKPOINT, CONFIG
from dreamshift.train.schedules import lr_factor
from dreamshift.tune.config import TuneConfig
from dreamshift.tune.sfsl import SpuriousFeatures, spurious_similarity_loss

MODEL_DIR = TUNED_MODEL  # a dreambooth run's full diffusers model folder
SUMMARY = "summary.json"  # losses and time of one trained model or adapter


def _non_default(cfg: TuneConfig) -> dict[str, Any]:
    default = asdict(TuneConfig())
    return {k: v for k, v in asdict(cfg).items() if v != default[k]}


# ---------------------------------------------------------------------------------- instances


def _folder_rows(root: Path, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of an image folder: ``root/<class>/*.png`` or, with one class named, ``root/*``."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs:
        groups = [(p.name, p) for p in subdirs if not classes or p.name in classes]
    elif len(classes) == 1:
        groups = [(classes[0], root)]
    else:
        raise DreamshiftError(
            f"{root} is neither a dataset directory nor a folder of class subfolders: put the "
            "images of each class in root/<class>/, or name the one class with --classes"
        )
    rows = []
    for name, folder in groups:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                rel = p.relative_to(root).as_posix()
                rows.append({"sample_id": rel, "path": rel, "fg_class": name, "bg_class": None,
                             "sha256": sha256_file(p)})  # fmt: skip
    return rows


def select_instances(source: Path, cfg: TuneConfig) -> list[dict[str, Any]]:
    """The instance rows a run trains on, in a fixed order: the usable ``split`` rows of a
    dataset directory (or an image folder's files), restricted to ``classes`` and
    ``backgrounds``, then ``sample_ids`` or ``shots`` per class (drawn with the run's seed)."""
    if (source / ds.DATASET_JSON).exists():
        manifest = ds.read_manifest(source).to_pylist()
        rows = usable_rows(manifest, cfg.split)
        # a spurious image shows no animal: its class is the one whose usual background it is
        usual = {b: c for c, b in ds.DatasetMeta.read(source).assignment.items()}
        rows = [r if r["fg_class"] else {**r, "fg_class": usual.get(r["bg_class"])} for r in rows]
        if not rows:
            splits = sorted({r["split"] for r in manifest})
            raise DreamshiftError(
                f"{source} has no usable images in split {cfg.split!r} (it has {splits}): "
                "pass --split"
            )
    elif source.is_dir():
        rows = _folder_rows(source, cfg.classes)
    else:
        raise DreamshiftError(f"{source} is not a dataset directory or an image folder")
    present = sorted({r["fg_class"] for r in rows if r["fg_class"]})
    missing = [c for c in cfg.classes if c not in present]
    if missing:
        raise DreamshiftError(f"{source} has no images of class(es) {missing}; it has {present}")
    rows = [r for r in rows if r["fg_class"] and (not cfg.classes or r["fg_class"] in cfg.classes)]
    if cfg.backgrounds:
        rows = [r for r in rows if r["bg_class"] in cfg.backgrounds]
    for spec in cfg.called_by:
        rows = _called_their_class(source, rows, spec, present, cfg.device)
    if cfg.called_by and cfg.classes:
        kept = {r["fg_class"] for r in rows}
        lost = [c for c in cfg.classes if c not in kept]
        if lost:
            raise DreamshiftError(
                f"--called-by {','.join(cfg.called_by)}: no image of class(es) {lost} in "
                f"{source} is called its class by every classifier; drop them from --classes "
                "or add images"
            )
    if cfg.sample_ids:
        by_id = {r["sample_id"]: r for r in rows}
        unknown = [s for s in cfg.sample_ids if s not in by_id]
        if unknown:
            raise DreamshiftError(
                f"sample ids not among the selected images of {source}: {unknown[:5]}"
            )
        rows = [by_id[s] for s in cfg.sample_ids]
    elif cfg.shots:
        rows = sorted(rows, key=lambda r: r["sample_id"])
        chosen = []
        for name in sorted({r["fg_class"] for r in rows}):
            of_class = [r for r in rows if r["fg_class"] == name]
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "shots", name))
            order = torch.randperm(len(of_class), generator=g)[: cfg.shots].tolist()
            chosen += [of_class[i] for i in sorted(order)]
        rows = chosen
    if not rows:
        raise DreamshiftError(
            f"no images of {source} match --split {cfg.split} --classes {list(cfg.classes)} "
            f"--backgrounds {list(cfg.backgrounds)} --called-by {list(cfg.called_by)}"
        )
    return rows


def _called_their_class(
    root: Path, rows: list[dict[str, Any]], spec: str, label_space: list[str], device: str
) -> list[dict[str, Any]]:
    """The rows that classifier ``spec`` predicts to be their ``fg_class`` (argmax over all of
    its outputs). ``label_space``, the source's classes, names the outputs of a zero-shot
    model; a classifier with its own head keeps its own."""
    if not rows:
        return rows
    clf = load_classifier(spec, label_space, resolve_runtime(device)["device"])
    classes = sorted({r["fg_class"] for r in rows})
    unknown = [c for c in classes if c not in clf.classes]
    if unknown:
        raise DreamshiftError(
            f"--called-by {spec} has no output for class(es) {unknown}: it cannot call an image "
            "that class"
        )
    if len(clf.classes) < 2:
        raise DreamshiftError(
            f"--called-by {spec}: its only output is {clf.classes[0]!r}, so it calls every "
            "image that; give a source with two classes or more"
        )
    kept = []
    with torch.no_grad():
        for positions, images, bad in iter_batches(root, rows, 64):
            if bad:
                raise DreamshiftError(bad[0][1])
            if images is not None:
                called = clf.logits(images).argmax(1)
                kept += [rows[i] for i, k in zip(positions, called, strict=True)
                         if clf.classes[k] == rows[i]["fg_class"]]  # fmt: skip
    return kept


def _pixels(root: Path, rows: list[dict[str, Any]], size: int) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1]: the images, resized (bicubic) when not at ``size``."""
    out = []
    for r in rows:
        path = root / r["path"]
        try:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(img))
        except (OSError, ValueError) as exc:
            raise DreamshiftError(f"cannot read instance image {path}: {exc}") from exc
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _image_size(root: Path, rows: list[dict[str, Any]]) -> int:
    with Image.open(root / rows[0]["path"]) as img:
        side = min(img.size)
    return max(8, side - side % 8)


def _prompt(template: str, identifier: str, row: dict[str, Any]) -> str:
    return Template(template).substitute(
        identifier=identifier,
        class_name=row["fg_class"].replace("_", " "),
        background=(row.get("bg_class") or "").replace("_", " "),
    )


# -------------------------------------------------------------------------------------- model


class _Model:
    """The frozen and trainable parts of a Stable Diffusion model, as diffusers loads them; for
    SDXL (Podell et al. 2023) also its second tokenizer and text encoder."""

    def __init__(self, path: Path, device: str):
        quiet_libraries()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        self.xl = is_sdxl(path)
        self.tokenizer_2: Any = None
        self.text_encoder_2: Any = None
        f32 = torch.float32  # whatever the files store (fp16 folders are common): transformers
        # loads a checkpoint's own dtype and diffusers float32, and the two must meet
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
            text_encoder: Any = CLIPTextModel.from_pretrained(path / "text_encoder")
            self.text_encoder = text_encoder.to(device, f32)
            self.vae = AutoencoderKL.from_pretrained(path / "vae").to(device, f32)
            self.unet = UNet2DConditionModel.from_pretrained(path / "unet").to(device, f32)
            self.scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
            if self.xl:
                self.tokenizer_2 = CLIPTokenizer.from_pretrained(path / "tokenizer_2")
                second: Any = CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2")
                self.text_encoder_2 = second.to(device, f32).requires_grad_(False)
        except (OSError, ValueError) as exc:
            raise DreamshiftError(f"cannot load the model in {path}: {exc}") from exc
        for name in ("tokenizer", "tokenizer_2") if self.xl else ("tokenizer",):
            if len(getattr(self, name)) <= 2:  # transformers' stand-in for missing files
                raise DreamshiftError(f"the tokenizer in {path / name} has no vocabulary")
        for part in (self.vae, self.text_encoder, self.unet):
            part.requires_grad_(False)
        self.device = device

    def check_identifier(self, identifier: str, templates: tuple[str, ...]) -> None:
        """DreamBooth binds the instance to one rare token: refuse an identifier the
        tokenizer splits."""
        if not any("identifier" in t for t in templates):
            return
        tokens = self.tokenizer.tokenize(identifier)
        if len(tokens) != 1:
            raise DreamshiftError(
                f"the tokenizer splits identifier {identifier!r} into {len(tokens)} tokens "
                f"{tokens}: DreamBooth needs a rare word it keeps whole (e.g. 'sks' for Stable "
                "Diffusion, 'q' for tiny-dream, whose vocabulary is the world's words and "
                "single letters); pass --identifier"
            )

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(N, L) token ids; SDXL: (N, 2, L), those of each of its tokenizers."""
        tokenizers = (self.tokenizer, self.tokenizer_2) if self.xl else (self.tokenizer,)
        ids = [
            tok(prompts, padding="max_length", truncation=True,
                max_length=tok.model_max_length, return_tensors="pt").input_ids
            for tok in tokenizers
        ]  # fmt: skip
        return torch.stack(ids, dim=1) if self.xl else ids[0]

    @torch.no_grad()
    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings of token ids, and the pooled embedding SDXL's UNet also takes
        ((N, 0) for 1.x/2.x). SDXL: both encoders' penultimate hidden states side by side,
        the pooled one from the second, as diffusers' SDXL pipelines encode prompts."""
        ids = ids.to(self.device)
        if not self.xl:
            return self.text_encoder(ids)[0], torch.zeros(len(ids), 0, device=self.device)
        first = self.text_encoder(ids[:, 0], output_hidden_states=True)
        second = self.text_encoder_2(ids[:, 1], output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        return hidden, second.text_embeds

    def added_conditions(self, pooled: torch.Tensor, side: int) -> dict[str, Any]:
        """SDXL's added UNet conditions: the pooled prompt embedding and the size and crop
        conditions (original size = target size = ``side``, no crop); none for 1.x/2.x."""
        if not self.xl:
            return {}
        sizes = torch.tensor([side, side, 0, 0, side, side], dtype=pooled.dtype)
        time_ids = sizes.to(pooled.device).repeat(len(pooled), 1)
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}

    @torch.no_grad()
    def latent_moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each image's latent (the VAE is frozen, so they are
        computed once; a step draws mean + std * noise, as ``latent_dist.sample`` does)."""
        means, stds = [], []
        for i in range(0, len(pixels), 16):
            dist = self.vae.encode(pixels[i : i + 16].to(self.device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
        scale = float(self.vae.config.scaling_factor)
        return torch.cat(means) * scale, torch.cat(stds) * scale


def _add_lora(model: _Model, cfg: TuneConfig) -> tuple[Any, Any]:
    """LoRA on the UNet's (and with ``train_text_encoder`` the text encoder's) attention
    projections; B starts at zero, so the adapted model starts equal to the base."""
    from peft import LoraConfig, inject_adapter_in_model

    alpha = cfg.alpha or cfg.rank
    unet_cfg = LoraConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                          target_modules=list(cfg.targets))  # fmt: skip
    try:
        model.unet.add_adapter(unet_cfg)
    except ValueError as exc:
        raise DreamshiftError(f"--targets {list(cfg.targets)}: {exc}") from exc
    text_cfg = None
    if cfg.train_text_encoder:
        text_cfg = LoraConfig(r=cfg.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                              target_modules=list(cfg.text_targets))  # fmt: skip
        # transformers' own add_adapter wants a newer peft than PyPI has; peft's injection is
        # what it calls underneath
        inject_adapter_in_model(text_cfg, model.text_encoder, "default")
    return unet_cfg, text_cfg


def _save_lora(model: _Model, folder: Path, unet_cfg: Any, text_cfg: Any) -> None:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(model.unet))
    text_layers: Any = (
        convert_state_dict_to_diffusers(get_peft_model_state_dict(model.text_encoder))
        if text_cfg is not None
        else None
    )
    folder.mkdir(parents=True, exist_ok=True)
    loader: Any = StableDiffusionXLLoraLoaderMixin if model.xl else StableDiffusionLoraLoaderMixin
    loader.save_lora_weights(  # with alpha: reloads at the right scale
        folder, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers,
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=text_cfg.to_dict() if text_cfg is not None else None,
    )  # fmt: skip


def _save_model(model: _Model, base: Path, folder: Path, text_trained: bool) -> None:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    parts: dict[str, Any] = {"unet": model.unet}
    if text_trained:
        parts["text_encoder"] = model.text_encoder
    if model.xl:
        pipe: Any = StableDiffusionXLPipeline.from_pretrained(base, local_files_only=True, **parts)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            base, safety_checker=None, requires_safety_checker=False, local_files_only=True,
            **parts,
        )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)


# ----------------------------------------------------------------------------------- training


class _Batches:
    """The encoded training data of one adapter: latent moments and prompt embeddings (or
    token ids, when the text encoder trains) of the instances and of the prior images."""

    def __init__(
        self,
        model: _Model,
        pixels: torch.Tensor,
        prompts: list[str],
        train_text: bool,
        classes: list[str],
        spurious: SpuriousFeatures | None = None,
    ):
        self.mean, self.std = model.latent_moments(pixels)
        self.classes = classes
        self.reference = None  # SFSL: the classifier's features of each instance image
        if spurious is not None:
            with torch.no_grad():
                self.reference = torch.cat(
                    [spurious.features(pixels[i : i + 64].to(model.device)).cpu()
                     for i in range(0, len(pixels), 64)]
                )  # fmt: skip
        self.ids = model.token_ids(prompts)
        self.embeds = None
        self.pooled = torch.zeros(len(self.ids), 0)  # SDXL's pooled prompt embeddings
        if not train_text:
            unique, inverse = torch.unique(self.ids, dim=0, return_inverse=True)
            enc, pooled = model.encode(unique)
            self.embeds, self.pooled = enc.cpu()[inverse], pooled.cpu()[inverse]

    def __len__(self) -> int:
        return len(self.mean)

    def draw(
        self, idx: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latents = self.mean[idx] + self.std[idx] * torch.randn(self.mean[idx].shape, generator=g)
        text = self.ids[idx] if self.embeds is None else self.embeds[idx]
        return latents, text, self.pooled[idx]


def _snr(scheduler: Any, t: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod[t]
    return alphas / (1.0 - alphas)


@dataclass(frozen=True)
class _StepContext:
    """What each training step of one model or adapter uses: model, data, optimizer, settings."""

    model: _Model
    cfg: TuneConfig
    instances: _Batches
    prior: _Batches | None
    spurious: SpuriousFeatures | None
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    procs: Processes
    kind: str  # the device's type: cuda:1 -> cuda
    autocast: bool  # bf16 autocast of the forward pass
    prediction: str  # the scheduler's prediction type: epsilon or v_prediction


def _trainable_parameters(model: _Model, cfg: TuneConfig) -> list[torch.nn.Parameter]:
    """The parameters that train: the UNet's (and with ``train_text_encoder`` the text's)."""
    params = [p for p in model.unet.parameters() if p.requires_grad]
    if cfg.train_text_encoder:
        params += [p for p in model.text_encoder.parameters() if p.requires_grad]
    return params


def _use_autocast(cfg: TuneConfig, device: str) -> bool:
    """Whether steps run under bf16 autocast; refuses bf16 where torch has no autocast."""
    kind = torch.device(device).type  # cuda:1 -> cuda
    autocast = cfg.precision == "bf16" or (kind == "cuda" and cfg.precision == "auto")
    if autocast and not torch.amp.is_autocast_available(kind):
        raise DreamshiftError(
            f"--precision bf16: torch has no autocast on {device}; use --precision no"
        )
    return autocast


def _prediction_type(sched: Any) -> str:
    """The scheduler's prediction type; refuses one other than epsilon or v_prediction."""
    prediction = sched.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise DreamshiftError(
            f"the model's scheduler predicts {prediction!r}; tune trains epsilon or v_prediction "
            "models (Stable Diffusion 1.x/2.x)"
        )
    return str(prediction)


def _set_learning_rate(ctx: _StepContext, s: int) -> None:
    """Set the optimizer's learning rate for step ``s`` by the run's schedule."""
    cfg = ctx.cfg
    for group in ctx.optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(cfg.lr_schedule, s, cfg.steps)


def _draw_global_batch(ctx: _StepContext, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Draw the whole global batch from ``g``: indices, latents, text, pooled, noise, t."""
    n, size = ctx.cfg.batch_size, ctx.procs.size  # per process; the global batch is n x size
    idx = torch.randint(len(ctx.instances), (n * size,), generator=g)
    latents, text, pooled = ctx.instances.draw(idx, g)
    if ctx.prior is not None:
        pidx = torch.randint(len(ctx.prior), (n * size,), generator=g)
        p_latents, p_text, p_pooled = ctx.prior.draw(pidx, g)
        latents, text = torch.cat([latents, p_latents]), torch.cat([text, p_text])
        pooled = torch.cat([pooled, p_pooled])
    noise = torch.randn(latents.shape, generator=g)
    num_t = ctx.model.scheduler.config.num_train_timesteps
    t = torch.randint(0, num_t, (len(latents),), generator=g)
    return idx, latents, text, pooled, noise, t


def _own_rows(
    ctx: _StepContext, idx: torch.Tensor, *batch: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """This process's rows: its instance indices, then its rows of ``batch`` on the device."""
    n, size = ctx.cfg.batch_size, ctx.procs.size
    mine = torch.arange(ctx.procs.rank * n, (ctx.procs.rank + 1) * n)  # this process's rows
    if ctx.prior is not None:
        mine = torch.cat([mine, mine + n * size])  # and their prior images
    return idx[mine[:n]], *(v[mine].to(ctx.model.device) for v in batch)


def _denoising_errors(
    ctx: _StepContext,
    latents: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    pooled: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The noisy latents, the UNet's prediction and each row's squared error against its target."""
    model, sched = ctx.model, ctx.model.scheduler
    side = latents.shape[-1] * 2 ** (len(model.vae.config.block_out_channels) - 1)
    noisy = sched.add_noise(latents, noise, t)
    target = noise if ctx.prediction == "epsilon" else sched.get_velocity(latents, noise, t)
    with torch.autocast(ctx.kind, torch.bfloat16) if ctx.autocast else contextlib.nullcontext():
        if ctx.instances.embeds is None:
            text = model.text_encoder(text)[0]
        pred = model.unet(noisy, t, text, **model.added_conditions(pooled, side)).sample
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    return noisy, pred, err


def _snr_weights(ctx: _StepContext, t: torch.Tensor) -> torch.Tensor:
    """Each instance row's loss weight: min(SNR, γ)/SNR with ``snr_gamma`` (Min-SNR), else 1."""
    n, device, sched = ctx.cfg.batch_size, ctx.model.device, ctx.model.scheduler
    weights = torch.ones(n, device=device)
    if ctx.cfg.snr_gamma:
        snr = _snr(sched, t[:n].cpu()).clamp(min=1e-8).to(device)  # 0 at zero terminal SNR
        divisor = snr + 1 if ctx.prediction == "v_prediction" else snr
        weights = torch.clamp(snr, max=ctx.cfg.snr_gamma) / divisor
    return weights


def _sfsl_term(
    ctx: _StepContext, idx: torch.Tensor, noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """SFSL's term of the loss: ``kappa`` x the spurious similarity of the decoded estimates."""
    assert ctx.spurious is not None and ctx.instances.reference is not None
    model, n = ctx.model, ctx.cfg.batch_size
    a = model.scheduler.alphas_cumprod.to(model.device)[t[:n]].view(n, 1, 1, 1)
    z, p = noisy[:n], pred[:n].float()
    x0 = (
        (z - (1 - a).sqrt() * p) / a.sqrt()
        if ctx.prediction == "epsilon"
        else a.sqrt() * z - (1 - a).sqrt() * p
    )  # the UNet's one-step estimate of the clean latent
    decoded = model.vae.decode(x0 / model.vae.config.scaling_factor).sample
    w = ctx.spurious.weights([ctx.instances.classes[i] for i in idx.tolist()])
    ref = ctx.instances.reference[idx].to(model.device)
    return ctx.cfg.kappa * spurious_similarity_loss(ref, ctx.spurious.features(decoded), w)


def _apply_gradients(ctx: _StepContext, loss: torch.Tensor) -> None:
    """Back-propagate ``loss``, average the gradients over the processes, clip them and step."""
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.procs.average_gradients(ctx.params)  # then clipped alike on every process
    torch.nn.utils.clip_grad_norm_(ctx.params, ctx.cfg.max_grad_norm)
    ctx.optimizer.step()


def _train_step(ctx: _StepContext, s: int, g: torch.Generator) -> float:
    """One step: each process draws the whole global batch from ``g`` and computes its rows."""
    n = ctx.cfg.batch_size
    _set_learning_rate(ctx, s)
    idx, latents, text, pooled, noise, t = _draw_global_batch(ctx, g)
    idx, latents, noise, t, text, pooled = _own_rows(ctx, idx, latents, noise, t, text, pooled)
    noisy, pred, err = _denoising_errors(ctx, latents, noise, t, text, pooled)
    loss = (err[:n] * _snr_weights(ctx, t)).mean()
    if ctx.prior is not None:
        loss = loss + ctx.cfg.prior_weight * err[n:].mean()
    if ctx.spurious is not None and ctx.instances.reference is not None:
        loss = loss + _sfsl_term(ctx, idx, noisy, pred, t)
    _apply_gradients(ctx, loss)
    return ctx.procs.sum({"loss": float(loss.item())})["loss"] / ctx.procs.size


def _train_state(ctx: _StepContext) -> TrainState:
    """What a checkpoint holds: the LoRA weights, or the whole UNet (and text encoder)."""
    if ctx.cfg.method == "lora":
        return TrainState(weights=ctx.params, optimizer=ctx.optimizer)
    return TrainState(
        unet=ctx.model.unet,
        text_encoder=ctx.model.text_encoder if ctx.cfg.train_text_encoder else None,
        optimizer=ctx.optimizer,
    )


def _loss_summary(done: int, losses: list[float], seconds: float) -> dict[str, Any]:
    """Steps done, the mean loss of the first and of the last steps, and the time taken."""
    window = max(1, min(50, len(losses) // 4))
    return {
        "steps": done,
        "loss_first": round(float(np.mean(losses[:window])), 5),
        "loss_last": round(float(np.mean(losses[-window:])), 5),
        "seconds": round(seconds, 1),
    }


def _train(
    model: _Model,
    cfg: TuneConfig,
    instances: _Batches,
    prior: _Batches | None,
    folder: Path,
    name: str,
    progress: bool,
    procs: Processes,
    spurious: SpuriousFeatures | None = None,
) -> dict[str, Any]:
    """Run the steps of one model or adapter on every process of ``procs`` (each
    ``cfg.batch_size`` of the global batch); returns the loss summary."""
    params = _trainable_parameters(model, cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    autocast = _use_autocast(cfg, model.device)
    prediction = _prediction_type(model.scheduler)
    ctx = _StepContext(model, cfg, instances, prior, spurious, params, optimizer, procs,
                torch.device(model.device).type, autocast, prediction)  # fmt: skip
    start = time.perf_counter()
    done, losses = fit_steps(
        name, cfg.steps, partial(_train_step, ctx), cfg.seed, _train_state(ctx),
        folder / CHECKPOINT, cfg.checkpoint_every, progress=progress, procs=procs,
    )  # fmt: skip
    return _loss_summary(done, losses, time.perf_counter() - start)


# fields that do not change the weights a run ends with: left out of its folder's hash
UNHASHED = ("checkpoint_every", "gradient_checkpointing")


def run_folder(
    out: Path, cfg: TuneConfig, model_sha: str, data: list[str], processes: int = 1
) -> Path:
    """``OUT/<method>-<hash of the non-default config, the model and the images>``; the SFSL
    classifier counts by its weights (:func:`classifier_fingerprint`), not by its name; more
    than one process counts (the global batch is ``batch_size`` x ``processes``)."""
    config = {k: v for k, v in _non_default(cfg).items() if k not in UNHASHED}
    if cfg.sfsl:
        config["sfsl"] = classifier_fingerprint(cfg.sfsl)
    payload: dict[str, Any] = {"config": config, "model": model_sha, "data": data}
    if processes > 1:
        payload["processes"] = processes
    text = json.dumps(payload, sort_keys=True)
    return out / f"{cfg.method}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class _Run:
    """What every model or adapter of one tune run shares: its settings, data and places."""

    cfg: TuneConfig
    source: Path
    base: Path  # the base model's folder
    device: str
    folder: Path
    size: int  # the training resolution
    instance_template: str
    class_template: str
    prior_root: Path | None
    prior_rows: list[dict[str, Any]]
    spurious: SpuriousFeatures | None
    progress: bool
    procs: Processes


def _prior_rows(
    prior_root: Path, rows: list[dict[str, Any]], prior_images: int
) -> list[dict[str, Any]]:
    """The prior dataset's class images of the instances' classes, ``prior_images`` of each."""
    prior_rows = usable_rows(ds.read_manifest(prior_root).to_pylist(), None)
    wanted = sorted({r["fg_class"] for r in rows})
    by_class = {c: [r for r in prior_rows if r["fg_class"] == c] for c in wanted}
    lacking = [c for c, rs in by_class.items() if not rs]
    if lacking:
        raise DreamshiftError(
            f"--prior {prior_root} has no class images of {lacking}: make them with "
            "`dreamshift dream GUIDES --mode txt2img --out PRIOR` from the base model"
        )
    limit = prior_images or None
    return [r for c in wanted for r in by_class[c][:limit]]


def _check_text_encoder_trainable(cfg: TuneConfig, base: Path) -> None:
    """Refuse ``train_text_encoder`` on an SDXL model (tune trains its UNet only)."""
    if cfg.train_text_encoder and is_sdxl(base):
        raise DreamshiftError(
            "--train-text-encoder: tune trains SDXL's UNet only (its two text encoders stay "
            "frozen); drop the flag"
        )


def _run_record(
    cfg: TuneConfig,
    source: Path,
    model_sha: str,
    size: int,
    rows: list[dict[str, Any]],
    prior_rows: list[dict[str, Any]],
    processes: int,
) -> dict[str, Any]:
    """The run's record (its ``config.json``): config, source, model, resolution and images."""
    return {
        "config": asdict(cfg),
        "source": str(source.resolve()),
        "model_id": cfg.model,
        "model_sha256": model_sha,
        "resolution": size,
        "instances": [
            {
                "sample_id": r["sample_id"],
                "fg_class": r["fg_class"],
                "bg_class": r["bg_class"],
                "sha256": r["sha256"],
            }
            for r in rows
        ],
        "prior_instances": [r["sample_id"] for r in prior_rows],
        "processes": processes,  # the global batch is batch_size x processes
    }


def _write_config(folder: Path, record: dict[str, Any]) -> None:
    """Create the run folder, marked as a tune run, and write the run's record into its
    ``config.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    portable = portable_record(record, folder)  # its source and model named from the folder
    write_atomic(folder / CONFIG, (json.dumps(portable, indent=2) + "\n").encode())
    mark_folder(folder, TUNE_RUN)


def _adapter_groups(
    cfg: TuneConfig, rows: list[dict[str, Any]], classes: list[str]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The instance rows of each model or adapter: one per class with ``per_class``, else all."""
    return (
        [(c, [r for r in rows if r["fg_class"] == c]) for c in classes]
        if cfg.per_class
        else [("", rows)]
    )


def _encode_batches(
    run: _Run,
    model: _Model,
    of: list[dict[str, Any]],
    root: Path,
    template: str,
    sfsl: SpuriousFeatures | None = None,
) -> _Batches:
    """The encoded training data of rows ``of`` (files under ``root``), prompted by ``template``."""
    cfg = run.cfg
    prompts = [_prompt(template, cfg.identifier, r) for r in of]
    pixels, labels = _pixels(root, of, run.size), [r["fg_class"] for r in of]
    return _Batches(model, pixels, prompts, cfg.train_text_encoder, labels, sfsl)


def _make_trainable(model: _Model, cfg: TuneConfig, name: str) -> tuple[Any, Any]:
    """Add LoRA (returns its UNet and text configs) or unfreeze the model (returns Nones)."""
    unet_cfg = text_cfg = None
    torch.manual_seed(derive_seed(cfg.seed, "init", name))  # the LoRA A matrices
    if cfg.method == "lora":
        unet_cfg, text_cfg = _add_lora(model, cfg)
    else:
        model.unet.requires_grad_(True)
        model.text_encoder.requires_grad_(cfg.train_text_encoder)
    if cfg.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            model.text_encoder.gradient_checkpointing_enable()
    return unet_cfg, text_cfg


def _tune_group(
    run: _Run, model: _Model, name: str, group: list[dict[str, Any]], where: Path
) -> dict[str, Any]:
    """Train one model or adapter on ``group``; the main process saves it and its summary."""
    cfg = run.cfg
    unet_cfg, text_cfg = _make_trainable(model, cfg, name)
    of_group = {r["fg_class"] for r in group}
    prior = (
        _encode_batches(run, model, [r for r in run.prior_rows if r["fg_class"] in of_group],
                        run.prior_root, run.class_template)
        if run.prior_root is not None
        else None
    )  # fmt: skip
    model.unet.train()
    model.text_encoder.train(cfg.train_text_encoder)  # checkpointing acts in train mode only
    instances = _encode_batches(run, model, group, run.source, run.instance_template, run.spurious)
    summary = _train(
        model, cfg, instances, prior, where, f"tune-{name}" if name else "tune", run.progress,
        run.procs, run.spurious,
    )  # fmt: skip
    model.unet.eval()
    if not run.procs.is_main:
        return summary
    if cfg.method == "lora":
        _save_lora(model, where, unet_cfg, text_cfg)
    else:
        _save_model(model, run.base, run.folder / MODEL_DIR, cfg.train_text_encoder)
    write_atomic(where / SUMMARY, (json.dumps(summary) + "\n").encode())
    return summary


def _finish_run(
    out: Path, folder: Path, record: dict[str, Any], summaries: dict[str, Any], log: Any
) -> None:
    """Append the run's results to ``OUT/results.jsonl``, mark it done and log its losses."""
    results = {"run": folder.name, **record, "losses": summaries}
    append_record(out / RESULTS, results)
    (folder / TUNE_DONE).write_text(json.dumps(summaries, indent=2) + "\n")
    log(f"tuned {folder}: " + ", ".join(f"{k or 'all'} loss {v['loss_first']} -> {v['loss_last']}"
                                          for k, v in summaries.items()))  # fmt: skip


def tune(source: str | Path, out: str | Path, cfg: TuneConfig, progress: bool = True,
         log: Any = print) -> Path:  # fmt: skip
    """Train one run (or skip it when its folder is done); returns the run folder. Started by
    ``accelerate launch`` (or ``torchrun``), every process takes ``batch_size`` of each global
    batch and only the main one writes."""
    cfg.check()
    procs = processes(cpu=cfg.device == "cpu")
    log = log if procs.is_main else (lambda *_: None)
    progress = progress and procs.is_main
    source, out = Path(source), Path(out)
    rows = select_instances(source, cfg)
    prior_root = Path(cfg.prior) if cfg.prior else None
    prior_rows = [] if prior_root is None else _prior_rows(prior_root, rows, cfg.prior_images)
    ref = locate_model(cfg.model)
    model_sha = hash_model(ref.path)
    data = [r["sha256"] for r in rows] + [f"prior:{r['sha256']}" for r in prior_rows]
    folder = run_folder(out, cfg, model_sha, data, procs.size)
    procs.agree(folder.name, "run (a hash of the config, the model and the images)")
    if (folder / TUNE_DONE).exists():
        log(f"{folder} is done: skipped")
        return folder

    device = str(procs.device) if procs.size > 1 else resolve_runtime(cfg.device)["device"]
    instance_t, class_t = cfg.prompts()
    _check_text_encoder_trainable(cfg, ref.path)
    model = _Model(ref.path, device)
    model.check_identifier(cfg.identifier, (instance_t, class_t))
    size = cfg.resolution or _image_size(source, rows)
    record = _run_record(cfg, source, model_sha, size, rows, prior_rows, procs.size)
    if procs.is_main:
        _write_config(folder, record)

    classes = sorted({r["fg_class"] for r in rows})
    spurious = SpuriousFeatures(cfg.sfsl, classes, device) if cfg.sfsl else None
    run = _Run(cfg, source, ref.path, device, folder, size, instance_t, class_t, prior_root,
               prior_rows, spurious, progress, procs)  # fmt: skip
    summaries: dict[str, Any] = {}
    for name, group in _adapter_groups(cfg, rows, classes):
        where = folder / ADAPTERS_DIR / name if name else folder
        if (where / SUMMARY).exists():  # a class adapter finished before an interruption
            summaries[name or "all"] = json.loads((where / SUMMARY).read_text())
            continue
        if name and summaries:  # a fresh base model for each class's adapter
            model = _Model(ref.path, device)
        summaries[name or "all"] = _tune_group(run, model, name, group, where)
    if not procs.is_main:
        procs.barrier()  # the main process writes the results
        return folder
    _finish_run(out, folder, record, summaries, log)
    procs.barrier()
    return folder
