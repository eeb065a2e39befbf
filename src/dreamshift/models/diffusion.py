"""Stable Diffusion through diffusers: finding a model offline, hashing it, and generating
images that depend only on their own seed.

Any Stable Diffusion 1.x/2.x or XL checkpoint in diffusers format works, by local folder or hub
id (``tune`` trains 1.x/2.x ones).
Models are never fetched silently when they cannot be: a hub id is looked up in the local
cache first, a download is tried only when ``HF_HUB_OFFLINE`` is unset, and either failure
ends within seconds with a message saying what was looked for and how to provide it.

Reproducibility (DESIGN.md, "Seeds"): every sample gets its own ``torch.Generator`` on the CPU
(diffusers accepts a list, one per image), so the starting noise never depends on the batch.
Floating-point kernels do: a matrix product over 2 rows and over 8 rows may round differently,
and on a CPU so does the thread count. With ``batch_invariant`` (the default) the UNet and the
VAE decoder compute each sample of a batch on its own (exactly the tensors of a batch of one)
and prompts are encoded one at a time, so an image is bit-identical for any batch size, batch
position, worker count or resume point on the same hardware, thread count and library
versions. A batch of one runs unchanged, and on a CPU larger batches gain nothing anyway; on a
GPU ``--no-batch-invariant`` buys throughput at the price of bit-exactness (pixels then agree
to within float rounding).

>>> ref = locate_model("tiny-dream")  # the model shipped in the package
>>> name, config = resolve_scheduler(ref.path, "ddim")
>>> dreamer = Dreamer(ref.path, "txt2img", name, config, resolve_runtime("cpu", "float32"))
>>> image = dreamer.generate([Request("a photo of a zebra, snow", "", seed=0)], 2, 1.0, 7.5, 64, 64)
>>> name, image[0].shape, image[0].dtype
('DDIMScheduler', (64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dreamshift.assets import shipped
from dreamshift.data.images import sha256_file
from dreamshift.errors import DreamshiftError
from dreamshift.folders import describe, folder_kind
from dreamshift.portable import located_record

# name -> (diffusers scheduler class, config overrides). "model": the checkpoint's own.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "lcm": ("LCMScheduler", {}),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_VARIANTS = ["*.fp16.*", "*.bf16.*", "*.non_ema.*", "*.ema.*"]
_VARIANT = re.compile(r"\.(fp16|bf16|non_ema|ema)\.")


def quiet_libraries() -> None:
    """diffusers and transformers log per-call warnings and progress bars; keep errors only."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True)
class ModelRef:
    model_id: str  # as the user gave it
    path: Path  # a local diffusers folder
    revision: str | None  # the hub commit of a cached snapshot


def is_sdxl(path: Path) -> bool:
    """Whether a diffusers folder holds Stable Diffusion XL (two text encoders, the UNet's added
    conditions; Podell et al. 2023), by its ``model_index.json``."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return str(index.get("_class_name", "")).startswith("StableDiffusionXL")


def check_model_folder(path: Path) -> None:
    """Fail with the missing file's name unless ``path`` looks like a diffusers SD folder."""
    if not (path / "model_index.json").is_file():
        raise DreamshiftError(
            f"{path} is not a diffusers model folder (no model_index.json). Convert a single "
            "checkpoint file with StableDiffusionPipeline.from_single_file(FILE)"
            ".save_pretrained(FOLDER) and pass --model FOLDER"
        )
    for comp in _COMPONENTS + (("text_encoder_2", "tokenizer_2") if is_sdxl(path) else ()):
        folder = path / comp
        if not folder.is_dir():
            raise DreamshiftError(f"model folder {path} lacks its {comp}/ folder")
    tok = path / "tokenizer"
    if (
        not ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())
        and not (tok / "tokenizer.json").is_file()
    ):
        raise DreamshiftError(
            f"model folder {path} has no tokenizer files (tokenizer/vocab.json and merges.txt, "
            "or tokenizer.json): copy them from the checkpoint's repository"
        )
    for comp in ("unet", "vae", "text_encoder"):
        if not any(p.suffix in (".safetensors", ".bin") for p in (path / comp).iterdir()):
            raise DreamshiftError(
                f"model folder {path} has no weights in {comp}/ (*.safetensors or *.bin)"
            )


TUNED_MODEL = "model"  # a DreamBooth run's diffusers folder, inside its run folder
TUNE_DONE = "done"  # written last in a tune run folder: the run is finished
TUNE_RUN = "tune-run"  # a tune run folder's kind (dreamshift.folders)
TINY_DREAM = "tiny-dream"  # the model shipped in the package (dreamshift.studies.tiny_dream)


def locate_model(model_id: str) -> ModelRef:
    """A local folder (or a DreamBooth run folder of ``dreamshift tune``), or a hub id found in
    the Hugging Face cache (or downloaded, when the hub may be reached). Fails within
    seconds with what was looked for and what to do."""
    if model_id == TINY_DREAM:
        path = shipped("tiny-dream")
        check_model_folder(path)
        return ModelRef(model_id, path, None)
    path = Path(model_id).expanduser()
    _refuse_unfinished_run(path, f"--model {model_id}")
    if path.is_dir() and (path / TUNED_MODEL / "model_index.json").is_file():
        path = path / TUNED_MODEL  # a `dreamshift tune --method dreambooth` run folder
    elif path.is_dir() and _is_lora(path):
        raise DreamshiftError(
            f"--model {model_id}: {path} holds LoRA adapters, not a model: pass it as --adapter "
            f"{model_id} with --model its base model ({_tune_base(path)})"
        )
    if path.is_dir():
        check_model_folder(path)
        return ModelRef(model_id, path.resolve(), None)
    if path.exists() or not _HUB_ID.match(model_id) or model_id.startswith((".", "~")):
        raise DreamshiftError(
            f"--model {model_id}: no diffusers model folder at {path.resolve()} (and it is not "
            "a hub id like 'org/name')"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # the component folders in safetensors; not root-level single-file checkpoints, .bin
    # duplicates or fp16/EMA variants (diffusers' from_pretrained loads none of them)
    patterns = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
    why = ""
    try:
        folder = Path(
            snapshot_download(
                model_id, local_files_only=True, allow_patterns=patterns, ignore_patterns=_VARIANTS
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        if constants.HF_HUB_OFFLINE:
            why = "downloads are off (HF_HUB_OFFLINE=1)"
        else:
            try:
                folder = Path(
                    snapshot_download(model_id, allow_patterns=patterns, ignore_patterns=_VARIANTS)
                )
            except Exception as exc:  # no network, unknown repo, gated repo ...
                why = f"the hub could not provide it ({type(exc).__name__}: {exc})"
    if why:
        raise DreamshiftError(
            f"model {model_id!r} is not available: there is no folder {path.resolve()}, the "
            f"Hugging Face cache {constants.HF_HUB_CACHE} holds no copy of it, and {why}. "
            f"On a machine with internet run `hf download {model_id} --local-dir FOLDER`, "
            "copy FOLDER here and pass --model FOLDER (or point HF_HOME at a cache holding it)"
        )
    check_model_folder(folder)
    return ModelRef(model_id, folder, folder.name)


def model_files(path: Path) -> list[Path]:
    """The files a Stable Diffusion pipeline loads from ``path``: model_index.json and its
    component folders, without weight variants, and without .bin files where a folder has
    safetensors. Extra files (a README, a single-file checkpoint) do not count."""
    files = [path / "model_index.json"]
    for comp in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        inside = sorted(p for p in comp.rglob("*") if p.is_file() and not _VARIANT.search(p.name))
        if any(p.suffix == ".safetensors" for p in inside):
            inside = [p for p in inside if p.suffix != ".bin"]
        files += inside
    return files


LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA file name (a tune run's output)
ADAPTERS_DIR = "adapters"  # a per-class tune run: adapters/<class>/LORA_FILE


def _is_lora(path: Path) -> bool:
    """A folder holding a LoRA: ``LORA_FILE`` itself or per-class ``adapters/<class>/``."""
    return (path / LORA_FILE).is_file() or any((path / ADAPTERS_DIR).glob(f"*/{LORA_FILE}"))


def _tune_record(run: Path) -> dict[str, Any]:
    """The config.json of a ``dreamshift tune`` run folder (it names the base model and the
    instances), else {}: a diffusers model folder's own config.json is none. A run folder
    says its kind (:mod:`dreamshift.folders`); one written before that is recognised by its
    record's keys."""
    kind = folder_kind(run) if run.is_dir() else None
    if kind is not None and kind != TUNE_RUN:
        return {}
    try:
        record = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(record, dict):
        record = located_record(record, run)  # its paths are written from the run folder
    if kind == TUNE_RUN:
        return record if isinstance(record, dict) else {}
    is_tune = isinstance(record, dict) and {"model_id", "instances"} <= record.keys()
    return record if is_tune and not (run / "model_index.json").is_file() else {}


def _refuse_other_output(path: Path, given_as: str) -> None:
    """A dreamshift output folder that is no diffusion model or adapter (a learn run)."""
    kind = folder_kind(path) if path.is_dir() else None
    if kind is not None and kind != TUNE_RUN:
        raise DreamshiftError(
            f"{given_as}: {path} is {describe(kind)}; give a diffusers model folder, a hub id "
            "or a `dreamshift tune` run"
        )


def _refuse_unfinished_run(path: Path, given_as: str) -> None:
    """A ``dreamshift tune`` run folder without its done marker is no model or adapter yet."""
    _refuse_other_output(path, given_as)
    if path.is_dir() and _tune_record(path) and not (path / TUNE_DONE).exists():
        raise DreamshiftError(
            f"{given_as}: {path} is an unfinished `dreamshift tune` run (no {TUNE_DONE} "
            "marker): run the same tune command again to finish it"
        )


def _tune_base(run: Path) -> str:
    """The base model a ``dreamshift tune`` run names in its config.json, if it has one."""
    return str(_tune_record(run).get("model_id", "the model it was trained on"))


def resolve_adapter(spec: str) -> dict[str, Any]:
    """``PATH[:SCALE]`` of a LoRA: a ``dreamshift tune`` run folder, a folder holding
    ``pytorch_lora_weights.safetensors`` or the file itself; scale 1 unless given. A per-class
    run (``adapters/<class>/``) gives one adapter per class, applied to that class's samples.
    Returns path, scale, sha256 (of the file, or per class) and classes (None: all)."""
    path_text, scale = spec, 1.0
    head, _, tail = spec.rpartition(":")
    if head and re.fullmatch(r"[-+]?\d*\.?\d+(e[-+]?\d+)?", tail):  # else a ':' of the path
        path_text, scale = head, float(tail)
    path = Path(path_text).expanduser()
    _refuse_unfinished_run(path, f"--adapter {spec}")
    if path.is_file() and path.suffix == ".safetensors":
        files = {"": path}
    elif (path / LORA_FILE).is_file():
        files = {"": path / LORA_FILE}
    elif (path / ADAPTERS_DIR).is_dir():
        files = {p.parent.name: p for p in sorted((path / ADAPTERS_DIR).glob(f"*/{LORA_FILE}"))}
    else:
        files = {}
    if not files and (path / TUNED_MODEL / "model_index.json").is_file():
        raise DreamshiftError(
            f"--adapter {spec}: {path} is a DreamBooth run (a whole model, no LoRA): pass it "
            f"as --model {path_text}"
        )
    if not files:
        raise DreamshiftError(
            f"--adapter {spec}: no LoRA at {path.resolve()} (expected a `dreamshift tune` run "
            f"folder, a folder holding {LORA_FILE}, or a .safetensors file)"
        )
    per_class = "" not in files
    return {
        "path": str(path.resolve()),
        "scale": scale,
        "files": {k: str(v.resolve()) for k, v in files.items()},
        "sha256": {k: sha256_file(v) for k, v in files.items()},
        "classes": sorted(files) if per_class else None,
    }


def hash_model(path: Path) -> str:
    """sha256 over :func:`model_files` (relative path and content), in path order."""
    total = hashlib.sha256()
    for p in model_files(path):
        total.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
    return total.hexdigest()


def resolve_scheduler(path: Path, name: str) -> tuple[str, dict[str, Any]]:
    """(class name, full config) of the scheduler to use: the checkpoint's own (``model``) or
    one of :data:`SCHEDULERS` built from the checkpoint's config (its beta schedule)."""
    quiet_libraries()
    import diffusers

    base_file = path / "scheduler" / "scheduler_config.json"
    try:
        base = json.loads(base_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DreamshiftError(f"cannot read the scheduler config {base_file}: {exc}") from exc
    overrides: dict[str, Any] = {}
    if name == "model":
        cls_name = str(base.get("_class_name"))
    elif name in SCHEDULERS:
        cls_name, overrides = SCHEDULERS[name]
    else:
        raise DreamshiftError(
            f"unknown scheduler {name!r}: choose 'model' or one of {', '.join(SCHEDULERS)}"
        )
    cls = getattr(diffusers, cls_name, None)
    if cls is None:
        raise DreamshiftError(f"{base_file} names scheduler {cls_name!r}, unknown to diffusers")
    scheduler = cls.from_config(base, **overrides)
    return cls_name, {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def resolve_runtime(
    device: str = "auto", dtype: str = "auto", threads: int | None = None, workers: int = 1
) -> dict[str, Any]:
    """The device, dtype and (on a CPU) torch thread count a run uses, all spelled out."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DreamshiftError("--device cuda: torch sees no CUDA device here; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DreamshiftError("--device mps: torch sees no MPS device here; use --device cpu")
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
    runtime: dict[str, Any] = {"device": device, "dtype": dtype}
    if device == "cpu":
        runtime["threads"] = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    return runtime


class _PerSample:
    """Wrap a network's forward so that each sample of a batch is computed on its own.

    With classifier-free guidance diffusers feeds the UNet ``cat([uncond_1..B, cond_1..B])``:
    ``rows_per_sample = 2``. Sample i's rows ``[i, B + i]`` are then computed together, exactly
    as in a batch of one, and the outputs are put back in place. Tensor arguments whose first
    dimension is the batch are indexed the same way; others (a scalar timestep) pass as is.
    """

    def __init__(self, forward: Callable[..., Any]):
        self.forward = forward
        self.samples = 1  # set by Dreamer.generate before each pipeline call
        functools.update_wrapper(self, forward)

    def __call__(self, sample: Any, *args: Any, **kwargs: Any) -> Any:
        import torch

        n, b = sample.shape[0], self.samples
        if b == 1 or n % b:
            return self.forward(sample, *args, **kwargs)
        per = n // b

        def take(x: Any, idx: list[int]) -> Any:
            if isinstance(x, dict):  # SDXL's added_cond_kwargs: text_embeds, time_ids
                return {k: take(v, idx) for k, v in x.items()}
            return x[idx] if torch.is_tensor(x) and x.ndim and x.shape[0] == n else x

        outs = []
        for i in range(b):
            idx = [i + k * b for k in range(per)]
            outs.append(
                self.forward(
                    take(sample, idx),
                    *(take(a, idx) for a in args),
                    **{k: take(v, idx) for k, v in kwargs.items()},
                )
            )
        first = outs[0]
        parts = [o[0] if isinstance(o, tuple) else o.sample for o in outs]  # each (per, ...)
        merged = torch.cat([p[k : k + 1] for k in range(per) for p in parts])  # back in order
        if isinstance(first, tuple):
            return (merged,)
        first.sample = merged  # UNet2DConditionOutput / DecoderOutput
        return first


@dataclass(frozen=True)
class Request:
    """One image to make: its prompt, seed, guide (img2img, inpaint) and the region inpaint
    redraws (white), already at the output size."""

    prompt: str
    negative_prompt: str
    seed: int
    guide: Image.Image | None = None
    fg_class: str = ""  # picks the class's adapter of a per-class LoRA
    redraw: Image.Image | None = None  # inpaint: "L", 255 where the generator draws


# which diffusers pipeline serves a dream mode: harmonize is an img2img pass, remove inpaints
PIPELINE_KINDS = {"txt2img": "txt2img", "img2img": "img2img", "harmonize": "img2img",
                  "inpaint": "inpaint", "remove": "inpaint"}  # fmt: skip
_PIPELINES = {
    (False, "txt2img"): "StableDiffusionPipeline",
    (False, "img2img"): "StableDiffusionImg2ImgPipeline",
    (False, "inpaint"): "StableDiffusionInpaintPipeline",
    (True, "txt2img"): "StableDiffusionXLPipeline",
    (True, "img2img"): "StableDiffusionXLImg2ImgPipeline",
    (True, "inpaint"): "StableDiffusionXLInpaintPipeline",
}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' float output in [0, 1] -> uint8, rounded as ``numpy_to_pil`` does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


class Dreamer:
    """A loaded Stable Diffusion pipeline that makes images from :class:`Request` batches."""

    def __init__(
        self,
        path: Path,
        mode: str,
        scheduler: str,
        scheduler_config: dict[str, Any],
        runtime: dict[str, Any],
        batch_invariant: bool = True,
        compile: bool = False,
        adapters: list[dict[str, Any]] | None = None,
    ):
        quiet_libraries()
        import diffusers
        import torch
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.device = runtime["device"]
        if self.device == "cpu":
            torch.set_num_threads(int(runtime["threads"]))
        if self.device == "cuda" and batch_invariant:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self.xl = is_sdxl(path)
        self.kind = PIPELINE_KINDS[mode]
        cls = getattr(diffusers, _PIPELINES[self.xl, self.kind])
        extra = {} if self.xl else {"safety_checker": None, "requires_safety_checker": False}
        try:
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype
                warnings.simplefilter("ignore", FutureWarning)
                pipe = cls.from_pretrained(
                    path,
                    torch_dtype=getattr(torch, runtime["dtype"]),
                    local_files_only=True,
                    **extra,
                )
        except (OSError, ValueError, RuntimeError) as exc:
            raise DreamshiftError(f"cannot load the model in {path}: {exc}") from exc
        for name in ("tokenizer", "tokenizer_2") if self.xl else ("tokenizer",):
            tokens = len(getattr(pipe, name))
            if tokens <= 2:  # transformers' stand-in for missing tokenizer files
                raise DreamshiftError(
                    f"the tokenizer in {path / name} has {tokens} tokens: its vocabulary files "
                    "are missing or unreadable"
                )
        pipe.scheduler = getattr(diffusers, scheduler).from_config(scheduler_config)
        pipe.set_progress_bar_config(disable=True)
        self._adapters = self._load_adapters(pipe, adapters or [])
        pipe.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA
        pipe.to(self.device)
        if self.device == "cuda":
            pipe.unet.to(memory_format=torch.channels_last)
        unet_forward = pipe.unet.forward
        if compile:
            unet_forward = torch.compile(unet_forward)
        self._per_sample: list[_PerSample] = []
        if batch_invariant:
            unet_forward = _PerSample(unet_forward)
            pipe.vae.decode = _PerSample(pipe.vae.decode)
            self._per_sample = [unet_forward, pipe.vae.decode]
        pipe.unet.forward = unet_forward
        self.pipe = pipe
        self.batch_invariant = batch_invariant
        self._embeds: dict[tuple[str, str, bool, tuple[str, ...]], tuple[Any, ...]] = {}
        self._active: tuple[str, ...] = self._activate("")

    @staticmethod
    def _load_adapters(pipe: Any, adapters: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
        """Load each LoRA file under its own name; returns (name, class or "", scale)."""
        loaded = []
        for i, adapter in enumerate(adapters):
            for cls, file in adapter["files"].items():
                name = f"a{i}-{cls}" if cls else f"a{i}"
                try:
                    with warnings.catch_warnings():  # peft warns of every adapter after the first
                        warnings.filterwarnings("ignore", "Already found a `peft_config`")
                        pipe.load_lora_weights(file, adapter_name=name)
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    raise DreamshiftError(
                        f"cannot load the LoRA {file} into this model (made for another base "
                        f"model?): {exc}"
                    ) from exc
                loaded.append((name, cls, float(adapter["scale"])))
        return loaded

    def _activate(self, fg_class: str) -> tuple[str, ...]:
        """Switch on the adapters that apply to ``fg_class``; returns their names."""
        if not self._adapters:
            return ()
        active = [(n, s) for n, c, s in self._adapters if c in ("", fg_class)]
        if active:
            self.pipe.set_adapters([n for n, _ in active], adapter_weights=[s for _, s in active])
            self.pipe.enable_lora()
        else:
            self.pipe.disable_lora()
        return tuple(n for n, _ in active)

    def _encode(self, prompt: str, negative: str, cfg: bool) -> tuple[Any, ...]:
        key = (prompt, negative, cfg, self._active)  # a text-encoder LoRA changes the embedding
        if key not in self._embeds:
            if len(self._embeds) > 4096:
                self._embeds.clear()
            import torch

            with torch.inference_mode():  # no autograd graph kept alive in the cache
                # SD: (prompt, negative); SDXL also the pooled embeddings of its second encoder
                self._embeds[key] = tuple(
                    self.pipe.encode_prompt(
                        prompt=prompt,
                        device=self.device,
                        num_images_per_prompt=1,
                        do_classifier_free_guidance=cfg,
                        negative_prompt=negative or None,
                    )
                )
        return self._embeds[key]

    def generate(
        self,
        requests: list[Request],
        steps: int,
        strength: float,
        guidance_scale: float,
        width: int,
        height: int,
    ) -> list[np.ndarray]:
        """Images as uint8 arrays (H, W, 3), one per request, each from its own seed."""
        import torch

        per_class = any(c for _, c, _ in self._adapters)
        if per_class and len({r.fg_class for r in requests}) > 1:  # one class's adapters a call
            return [
                self.generate([r], steps, strength, guidance_scale, width, height)[0]
                for r in requests
            ]
        if per_class:
            self._active = self._activate(requests[0].fg_class)

        cfg = guidance_scale > 1.0  # diffusers applies classifier-free guidance only then
        for wrapper in self._per_sample:
            wrapper.samples = len(requests)
        if self.batch_invariant:  # one prompt at a time, each encoding cached
            embeds = [self._encode(r.prompt, r.negative_prompt, cfg) for r in requests]
            kwargs: dict[str, Any] = {"prompt_embeds": torch.cat([e[0] for e in embeds])}
            if cfg:
                kwargs["negative_prompt_embeds"] = torch.cat([e[1] for e in embeds])
            if self.xl:
                kwargs["pooled_prompt_embeds"] = torch.cat([e[2] for e in embeds])
                if cfg:
                    kwargs["negative_pooled_prompt_embeds"] = torch.cat([e[3] for e in embeds])
        else:
            kwargs = {
                "prompt": [r.prompt for r in requests],
                "negative_prompt": [r.negative_prompt for r in requests] if cfg else None,
            }
        kwargs.update(
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            output_type="np",
        )
        if self.kind == "img2img":
            kwargs.update(image=[r.guide for r in requests], strength=strength)
        elif self.kind == "inpaint":  # a 9-channel UNet sees the mask; a 4-channel one blends
            # the guide's latents back outside it at every step (diffusers does both)
            kwargs.update(image=[r.guide for r in requests], strength=strength, width=width,
                          height=height, mask_image=[r.redraw for r in requests])  # fmt: skip
        else:
            kwargs.update(width=width, height=height)
        with torch.inference_mode():
            images = self.pipe(**kwargs).images  # (B, H, W, 3) floats in [0, 1]
        return list(to_uint8(np.asarray(images)))
