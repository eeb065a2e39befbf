"""A tiny Stable Diffusion in diffusers' own format, built offline.

The components mirror diffusers' test pipelines (``get_dummy_components()`` in
``tests/pipelines/stable_diffusion``): a 2-level UNet2DConditionModel with 32/64 channels, a
2-block AutoencoderKL, a 5-layer 32-wide CLIP text encoder and a DDIM scheduler. No package
ships a CLIP vocabulary small enough, so :func:`write_byte_bpe_tokenizer` writes a byte-level
BPE one: the 256 byte symbols, the same with ``</w>``, and merges whose parts are all in the
vocabulary (a requirement of the BPE tokenizer).

Saved with ``save_pretrained``, the result loads with ``from_pretrained`` exactly like a real
checkpoint, so everything downstream takes the same code path on a CPU as on a GPU.

>>> import tempfile
>>> path = save_tiny_sd(Path(tempfile.mkdtemp()) / "tiny-sd", seed=0)
>>> (path / "model_index.json").is_file()
True
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

# words whose BPE merges are added, so that the world's prompts are not split into bytes only
_WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "on",
    "in",
    "at",
    "an",
    "grass",
    "road",
    "forest",
    "water",
    "sand",
    "indoors",
    "snow",
    "rain",
    "night",
    "cave",
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
]
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode symbols (as in CLIP's tokenizer)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the lowest-ranked adjacent pair until no pair has
    a rank. CLIP's tokenizer merges every occurrence of that pair at once, this the first only,
    so words that repeat a pair ("mammal") can end in several tokens; changing it changes the
    vocabulary of the shipped tiny-dream."""
    while len(parts) > 1:
        pairs = [(ranks.get(p, len(ranks) + 1), i) for i, p in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank > len(ranks):
            break
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def byte_bpe_vocab(words: list[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """The vocabulary and merge list of a byte-level BPE tokenizer in which each of ``words``
    (default: the world's class and background names) is one token, except words that repeat
    a pair (see :func:`_bpe`); any other text falls back to smaller pieces, down to bytes."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words or _WORDS:
        # apply the merges so far as the tokenizer will (lowest rank first), then join what is
        # left from the left: "c a", "ca t</w>"; later merges never split an earlier word
        parts = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            ranks[parts[0], parts[1]] = len(merges)
            merges.append(f"{parts[0]} {parts[1]}")
            if merged not in tokens:
                tokens.append(merged)
            parts = [merged, *parts[2:]]
    tokens += [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_byte_bpe_tokenizer(
    folder: str | Path, words: list[str] | None = None, max_length: int = 77
) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and a CLIPTokenizer config to ``folder``; prompts
    are padded or cut to ``max_length`` tokens."""
    from dreamshift.models.diffusion import quiet_libraries

    quiet_libraries()
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = byte_bpe_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length
    )
    tok.save_pretrained(folder)
    return folder


def build_tiny_sd(seed: int = 0, tokenizer_dir: str | Path | None = None):
    """A random-weight StableDiffusionPipeline (deterministic for ``seed``) on the CPU."""
    import tempfile

    from dreamshift.models.diffusion import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = CLIPTokenizer.from_pretrained(write_byte_bpe_tokenizer(tokenizer_dir or tmp))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            pad_token_id=tok.pad_token_id,
            vocab_size=len(tok),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # as Stable Diffusion 1.x ships it
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it to ``folder`` (safetensors)."""
    folder = Path(folder)
    build_tiny_sd(seed).save_pretrained(folder, safe_serialization=True)
    return folder
