"""The published Stable Diffusion architectures at full size with random weights, written as
diffusers folders: the shapes every path meets with a real checkpoint (SD 1.5's 860 M-parameter
UNet and CLIP ViT-L/14 text encoder; SD 2.1's OpenCLIP ViT-H text encoder, linear attention
projections and v-prediction; SDXL's 2.6 B-parameter UNet, second text encoder and added
conditions), without the hub. For tests and benchmarks: the images are noise.

The configs are those of the published ``model_index.json`` folders (Rombach et al. 2022;
``stable-diffusion-v1-5``, ``stable-diffusion-2-1`` and ``stable-diffusion-xl-base-1.0``;
Podell et al. 2023); the tokenizer is CLIP's byte-level BPE (Radford et al. 2021), built from
the vocabulary open_clip ships.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError

VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "norm_num_groups": 32,
}
SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}
TEXT = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406,
        "eos_token_id": 49407, "pad_token_id": 1}  # fmt: skip

SHAPES: dict[str, dict[str, Any]] = {
    "sd15": {
        "unet": {**UNET, "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
        "vae": {**VAE, "sample_size": 512},
        "text_encoder": {
            **TEXT,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        "scheduler": SCHEDULER,
    },
    "sd21": {  # 768 x 768, v-prediction
        "unet": {
            **UNET,
            "sample_size": 96,
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
            "upcast_attention": True,
        },
        "vae": {**VAE, "sample_size": 768},
        "text_encoder": {
            **TEXT,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 23,
            "projection_dim": 512,
            "hidden_act": "gelu",
        },
        "scheduler": {
            **SCHEDULER,
            "_class_name": "DDIMScheduler",
            "clip_sample": False,
            "prediction_type": "v_prediction",
        },
    },
    "sdxl": {  # 1024 x 1024; a second, larger text encoder and the UNet's added conditions
        "unet": {
            **UNET,
            "sample_size": 128,
            "down_block_types": ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
            "up_block_types": ["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"],
            "block_out_channels": [320, 640, 1280],
            "attention_head_dim": [5, 10, 20],
            "transformer_layers_per_block": [1, 2, 10],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        "vae": {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "text_encoder": {
            **TEXT,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        "text_encoder_2": {  # OpenCLIP ViT-bigG/14's text tower
            **TEXT,
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 20,
            "num_hidden_layers": 32,
            "projection_dim": 1280,
            "hidden_act": "gelu",
        },
        "scheduler": {
            **SCHEDULER,
            "_class_name": "EulerDiscreteScheduler",
            "timestep_spacing": "leading",
            "interpolation_type": "linear",
        },
    },
}


def clip_tokenizer(folder: Path) -> None:
    """CLIP's tokenizer (49 408 tokens, 77 positions) in ``folder``, as transformers'
    ``CLIPTokenizer`` reads it: vocabulary and merges built from open_clip's BPE file."""
    try:
        from open_clip.tokenizer import bytes_to_unicode, default_bpe
    except ImportError as exc:
        raise DreamshiftError(
            "CLIP's tokenizer is built from open_clip's vocabulary: pip install 'dreamshift[clip]'"
        ) from exc
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as f:  # the first line is a header; then 48 894 merges
        merges = f.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              pad_token="<|endoftext|>", model_max_length=77)  # fmt: skip
    if len(tokenizer) != TEXT["vocab_size"]:
        raise DreamshiftError(f"CLIP's tokenizer came out with {len(tokenizer)} tokens, not 49408")
    tokenizer.save_pretrained(str(folder))


def write_random_pipeline(shape: str, folder: str | Path, seed: int = 0) -> Path:
    """A diffusers folder of ``shape`` (``sd15``, ``sd21`` or ``sdxl``) with random weights
    (seeded), stored in float16 (half the disk: 2 GB for SD 1.5, 7 GB for SDXL)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if shape not in SHAPES:
        raise DreamshiftError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES)}")
    cfg, folder = SHAPES[shape], Path(folder)
    builders: dict[str, Any] = {
        "unet": lambda: UNet2DConditionModel(**cfg["unet"]),
        "vae": lambda: AutoencoderKL(**cfg["vae"]),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
    }
    if "text_encoder_2" in cfg:
        config_2 = CLIPTextConfig(**cfg["text_encoder_2"])
        builders["text_encoder_2"] = lambda: CLIPTextModelWithProjection(config_2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, build in builders.items():  # one at a time: SDXL's UNet is 10 GB in float32
            build().to(torch.float16).save_pretrained(str(folder / name))
    scheduler_cfg = {k: v for k, v in cfg["scheduler"].items() if k != "_class_name"}
    schedulers: dict[str, Any] = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler,
                                  "EulerDiscreteScheduler": EulerDiscreteScheduler}  # fmt: skip
    # from_config, as from a published scheduler_config.json: keys of another class are kept
    scheduler = schedulers[cfg["scheduler"]["_class_name"]].from_config(scheduler_cfg)
    scheduler.save_pretrained(str(folder / "scheduler"))
    clip_tokenizer(folder / "tokenizer")
    xl = "text_encoder_2" in cfg
    if xl:
        clip_tokenizer(folder / "tokenizer_2")
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", cfg["scheduler"]["_class_name"]],
    }
    if xl:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
        index["force_zeros_for_empty_prompt"] = True
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None],
                     requires_safety_checker=False)  # fmt: skip
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder
