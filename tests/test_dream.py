"""dreamshift dream on a tiny random-weight Stable Diffusion, saved and loaded like a real one."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import tree_digest
from dreamshift.cli import main
from dreamshift.compose.config import ComposeConfig, ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data.images import sha256_bytes
from dreamshift.dream import runner
from dreamshift.dream.config import DreamConfig
from dreamshift.dream.prompts import load_recipe
from dreamshift.dream.quality import quality_flag
from dreamshift.dream.runner import dream, plan_dream
from dreamshift.errors import DreamshiftError
from dreamshift.models.diffusion import SCHEDULERS, Dreamer, Request, resolve_runtime
from dreamshift.models.tiny_sd import save_tiny_sd

STEPS = ["--steps", "2", "--strength", "0.5", "--no-progress"]


def rows(root: Path) -> list[dict]:
    return ds.read_manifest(root).to_pylist()


def dream_cmd(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["dream", str(src), "--out", str(out), "--model", str(model), *STEPS, *extra]


def images_and_rows(root: Path) -> dict[str, str]:
    """Digest of a dataset's images and manifest (not its timing stats)."""
    return tree_digest(root, exclude_suffixes=(".done",))


def test_a_cue_conflict_split_is_dreamed_only_when_named(tmp_path):
    """Its prompt names the shape's class, so a dream tends to repaint the coat: by default it
    is left out, like the spurious split."""
    cfg = ComposeConfig(
        classes=("cat", "dog"),
        background_names=("grass",),
        recipe=ShiftRecipe(rho=1.0, train_size=0, val_per_group=0, test_per_group=1,
                           anti_per_group=0, conflict_per_group=1),
    )  # fmt: skip
    src = tmp_path / "paste"
    compose(cfg, src, progress=False)
    paste = ["--mode", "paste", "--no-progress"]
    assert main(["dream", str(src), "--out", str(tmp_path / "all"), *paste]) == 0
    assert sorted(r["split"] for r in rows(tmp_path / "all")) == ["test", "test"]
    named = ["--splits", "conflict", "--out", str(tmp_path / "conflict")]
    assert main(["dream", str(src), *named, *paste]) == 0
    dreamed = sorted(
        (r["split"], r["fg_class"], r["coat_class"]) for r in rows(tmp_path / "conflict")
    )
    assert dreamed == [("conflict", "cat", "dog"), ("conflict", "dog", "cat")]


def test_img2img_through_the_cli_records_full_provenance(tmp_path, tiny_sd, guides):
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, tiny_sd)) == 0
    made, source = rows(out), {r["sample_id"]: r for r in rows(guides)}
    assert len(made) == len(source) == 12
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["stage"] == "dream" and meta["complete"] and meta["num_failed"] == 0
    seeds = set()
    for r in made:
        g = source[r["guide_sample_id"]]
        assert r["status"] == "ok" and r["flag"] is None
        assert (r["split"], r["fg_class"], r["bg_class"]) == (
            g["split"],
            g["fg_class"],
            g["bg_class"],
        )
        assert (r["box_x"], r["box_w"], r["fg_source"]) == (g["box_x"], g["box_w"], g["fg_source"])
        assert r["guide_sha256"] == g["sha256"]
        assert r["pipeline"] == "img2img" and r["model_id"] == str(tiny_sd)
        assert r["model_sha256"] == meta["config"]["resolved"]["model_sha256"]
        assert r["scheduler"] == "DDIMScheduler"
        assert json.loads(r["scheduler_config"])["beta_schedule"] == "scaled_linear"
        assert (r["steps"], r["strength"], r["guidance_scale"]) == (2, 0.5, 7.5)
        background = {"grass": "on grass", "snow": "in snow"}[r["bg_class"]]
        assert r["prompt"].startswith(f"a photo of a {r['fg_class']}, ")
        assert r["prompt"].endswith(f", {background}")
        assert r["negative_prompt"] == ""
        assert json.loads(r["runtime"])["device"] == "cpu"
        assert json.loads(r["versions"])["diffusers"]
        img = Image.open(out / r["path"])
        assert img.size == (64, 64) and img.mode == "RGB"
        assert sha256_bytes((out / r["path"]).read_bytes()) == r["sha256"]
        seeds.add(r["seed"])
        # img2img changed the guide
        guide = np.asarray(Image.open(guides / g["path"]).convert("RGB"))
        assert np.abs(np.asarray(img).astype(int) - guide).mean() > 1
    assert len(seeds) == 12


def test_txt2img_uses_the_imagenet_g_templates(tmp_path, tiny_sd, guides):
    out = tmp_path / "dream"
    argv = dream_cmd(guides, out, tiny_sd, "--mode", "txt2img", "--prompts", "imagenet-g")
    assert main(argv) == 0
    templates = load_recipe("imagenet-g").templates
    assert len(templates) == 80
    for r in rows(out):
        assert r["pipeline"] == "txt2img" and r["strength"] is None
        assert r["prompt_template"] in templates
        assert r["prompt"] == r["prompt_template"].replace("${class_name}", r["fg_class"])
        assert r["box_x"] is None  # no guide layout in a txt2img image
    assert len({r["prompt_template"] for r in rows(out)}) > 1  # drawn per sample


def test_paste_mode_copies_guides_unchanged(tmp_path, guides):
    out = tmp_path / "paste"
    assert main(["dream", str(guides), "--out", str(out), "--mode", "paste", "--no-progress"]) == 0
    for r in rows(out):
        assert r["sha256"] == r["guide_sha256"] and r["pipeline"] == "paste"


def test_pixels_do_not_depend_on_batch_size_or_workers(tmp_path, tiny_sd, guides):
    common = ["--threads", "1", "--shard-size", "5"]
    runs = {
        "b1w1": ["--batch-size", "1"],
        "b4w1": ["--batch-size", "4"],
        "b3w2": ["--batch-size", "3", "--workers", "2"],
    }
    digests = {}
    for name, extra in runs.items():
        assert main(dream_cmd(guides, tmp_path / name, tiny_sd, *common, *extra)) == 0
        digests[name] = images_and_rows(tmp_path / name)
    assert digests["b1w1"] == digests["b4w1"] == digests["b3w2"]


def test_seeds_and_ids_do_not_depend_on_threads(tmp_path, tiny_sd, guides):
    made = {}
    for threads in ("1", "2"):
        out = tmp_path / threads
        assert main(dream_cmd(guides, out, tiny_sd, "--splits", "test", "--threads", threads)) == 0
        made[threads] = [(r["sample_id"], r["seed"], r["prompt"]) for r in rows(out)]
    assert made["1"] == made["2"]


def test_a_sample_with_a_bad_input_is_recorded_and_the_run_goes_on(tmp_path, tiny_sd, guides):
    """A guide changed since it was composed fails its sample only, whatever the batch size."""
    src = tmp_path / "guides"
    shutil.copytree(guides, src)
    doomed = rows(src)[5]
    (src / doomed["path"]).write_bytes((src / doomed["path"]).read_bytes() + b"x")
    cfg = DreamConfig(source=str(src), model=str(tiny_sd), steps=2, strength=0.5)
    outcome = {}
    for batch in (1, 4):
        out = tmp_path / f"b{batch}"
        result = dream(cfg, out, batch_size=batch, progress=False)
        assert result.num_failed == 1
        (failed,) = [r for r in rows(out) if r["status"] == "failed"]
        assert failed["guide_sample_id"] == doomed["sample_id"]
        assert "changed since it was composed" in failed["error"]
        outcome[batch] = images_and_rows(out)
    assert outcome[1] == outcome[4]


def test_any_other_error_stops_the_run_and_the_rerun_after_a_fix_resumes(
    tmp_path, tiny_sd, guides, monkeypatch
):
    cfg = DreamConfig(source=str(guides), model=str(tiny_sd), steps=2, strength=0.5, shard_size=4)
    doomed = plan_dream(cfg).specs[5].seed  # in shard 1 of 3
    real = Dreamer.generate

    def generate(self, requests, *args):
        if any(r.seed == doomed for r in requests):
            raise RuntimeError("a bug (injected)")
        return real(self, requests, *args)

    monkeypatch.setattr(Dreamer, "generate", generate)
    out = tmp_path / "dream"
    with pytest.raises(RuntimeError, match=r"a bug \(injected\)"):
        dream(cfg, out, batch_size=2, progress=False)
    layout = ds.DatasetLayout(out)
    assert [ds.shard_is_done(layout, k) for k in range(3)] == [True, False, False]
    assert not json.loads((out / "dataset.json").read_text())["complete"]

    monkeypatch.undo()  # the bug fixed
    result = dream(cfg, out, batch_size=2, progress=False)
    assert (result.shards_run, result.num_failed) == (2, 0)
    dream(cfg, tmp_path / "reference", progress=False)
    assert images_and_rows(out) == images_and_rows(tmp_path / "reference")


@pytest.mark.parametrize("code", [errno.EACCES, errno.ENOSPC])
def test_an_unwritable_output_stops_before_the_model_loads(
    tmp_path, tiny_sd, guides, monkeypatch, code
):
    def write_atomic(path, data):
        raise OSError(code, os.strerror(code), str(path))

    def make_dreamer(plan):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ds, "write_atomic", write_atomic)
    monkeypatch.setattr(runner, "make_dreamer", make_dreamer)
    out = tmp_path / "dream"
    cfg = DreamConfig(source=str(guides), model=str(tiny_sd), steps=2, strength=0.5)
    with pytest.raises(DreamshiftError, match=rf"cannot write to {re.escape(str(out))}: "):
        dream(cfg, out, progress=False)


def test_without_batch_invariance_batches_are_recorded(tmp_path, tiny_sd, guides):
    out = tmp_path / "fast"
    assert main(dream_cmd(guides, out, tiny_sd, "--no-batch-invariant", "--batch-size", "4")) == 0
    resolved = json.loads((out / "dataset.json").read_text())["config"]["resolved"]
    assert resolved["batch_size"] == 4 and resolved["runtime"]["batch_invariant"] is False


def test_every_row_regenerates_exactly_and_a_changed_image_is_caught(
    tmp_path, tiny_sd, guides, capsys
):
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, tiny_sd, "--batch-size", "4")) == 0
    capsys.readouterr()
    assert main(["regenerate", str(out), "--all"]) == 0
    assert "12 of 12 regenerated identically" in capsys.readouterr().out

    victim, other = rows(out)[3], rows(out)[4]
    shutil.copy(out / other["path"], out / victim["path"])
    assert main(["regenerate", str(out), victim["sample_id"], other["sample_id"]]) == 1
    printed = capsys.readouterr().out
    assert f"MISMATCH {victim['sample_id']}: the file" in printed
    assert f"match {other['sample_id']}: identical" in printed


def test_regenerate_refuses_a_different_model(tmp_path, tiny_sd, guides, capsys):
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, tiny_sd, "--splits", "test")) == 0
    other = save_tiny_sd(tmp_path / "other-sd", seed=1)
    assert main(["regenerate", str(out), "--all", "--model", str(other)]) == 1
    assert "is not the one this dataset was made with" in capsys.readouterr().err


def _dream_subprocess(src: Path, out: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dreamshift.cli",
        *dream_cmd(src, out, model, "--shard-size", "2"),
    ]


def test_resume_after_sigkill_is_byte_identical(tmp_path, tiny_sd, guides):
    reference = tmp_path / "reference"
    assert main(dream_cmd(guides, reference, tiny_sd, "--shard-size", "2")) == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        _dream_subprocess(guides, killed, tiny_sd), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / "shards").glob("*.done"))) >= 2:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done_before = sorted((killed / "shards").glob("*.done"))
    assert 2 <= len(done_before) < 6 and not (killed / "manifest.parquet").exists()
    stamps = {p.name: p.read_text() for p in done_before}

    resumed = subprocess.run(  # other workers: the run's recorded thread count is kept
        [*_dream_subprocess(guides, killed, tiny_sd), "--workers", "2"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - len(done_before)} shards run" in resumed.stdout
    assert {p.name: p.read_text() for p in done_before} == stamps  # finished shards kept
    assert images_and_rows(killed) == images_and_rows(reference)


def test_a_disk_without_room_for_a_shard_stops_before_the_model_loads(
    tmp_path, tiny_sd, guides, monkeypatch, capsys
):
    import shutil as shutil_module
    from collections import namedtuple

    import dreamshift.dream.runner as runner

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _: usage(10**9, 10**9 - 4096, 4096))

    def loaded(_plan):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "make_dreamer", loaded)
    assert main(dream_cmd(guides, tmp_path / "out", tiny_sd)) == 1
    err = capsys.readouterr().err
    assert "the disk has 0.0 MB free, and a shard needs about" in err and "free some" in err


def test_failed_samples_are_recorded_and_retried(tmp_path, tiny_sd, guides, capsys):
    src = tmp_path / "guides"
    shutil.copytree(guides, src)
    broken = rows(src)[:2]
    saved = {r["path"]: (src / r["path"]).read_bytes() for r in broken}
    for r in broken:
        (src / r["path"]).write_bytes(b"not a png")

    out = tmp_path / "dream"
    assert main(dream_cmd(src, out, tiny_sd, "--batch-size", "4")) == 1
    made = {r["guide_sample_id"]: r for r in rows(out)}
    for r in broken:
        failed = made[r["sample_id"]]
        assert failed["status"] == "failed" and failed["path"] is None
        assert str(src / r["path"]) in failed["error"] and "changed since" in failed["error"]
    assert sum(r["status"] == "ok" for r in made.values()) == 10
    assert json.loads((out / "dataset.json").read_text())["num_failed"] == 2
    ok_files = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows(out) if r["path"]}

    assert main(dream_cmd(src, out, tiny_sd, "--retry-failed")) == 1  # still broken
    for path, data in saved.items():
        (src / path).write_bytes(data)
    capsys.readouterr()
    assert main(dream_cmd(src, out, tiny_sd, "--retry-failed")) == 0
    assert "(0 failed, 0 flagged, 1 shards run)" in capsys.readouterr().out
    assert all(r["status"] == "ok" for r in rows(out))
    assert {p: (out / p).stat().st_mtime_ns for p in ok_files} == ok_files  # not redone

    reference = tmp_path / "reference"
    assert main(dream_cmd(src, reference, tiny_sd)) == 0
    assert images_and_rows(out) == images_and_rows(reference)


def _broken_decoder(src: Path, out: Path, bias: float) -> Path:
    """A copy of the tiny model whose VAE decodes every latent to one flat colour."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(src, safety_checker=None)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.weight.zero_()
        pipe.vae.decoder.conv_out.bias.fill_(bias)
    pipe.save_pretrained(out)
    return out


@pytest.mark.parametrize(("bias", "flag"), [(-1.0, "black"), (0.0, "blank")])
def test_black_and_blank_outputs_are_flagged_not_kept(tmp_path, tiny_sd, guides, bias, flag):
    model = _broken_decoder(tiny_sd, tmp_path / "broken", bias)
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, model, "--splits", "test")) == 0
    made = rows(out)
    assert made and all(r["status"] == "flagged" and r["flag"] == flag for r in made)
    assert json.loads((out / "dataset.json").read_text())["num_flagged"] == len(made)


def test_quality_flag_thresholds():
    img = np.zeros((16, 16, 3), np.uint8)
    assert quality_flag(img) == "black"
    img[0, 0] = 200  # one bright pixel: not black, and its channel's std is 12.5: not blank
    assert quality_flag(img) is None
    assert quality_flag(np.full((16, 16, 3), 7, np.uint8)) == "black"
    assert quality_flag(np.full((16, 16, 3), 9, np.uint8)) == "blank"
    noisy = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    assert quality_flag(noisy) is None


def test_a_missing_model_fails_fast_with_what_to_do(tmp_path, guides, capsys):
    start = time.monotonic()
    argv = dream_cmd(guides, tmp_path / "out", Path("no-such-org/no-such-model"))
    assert main(argv) == 1
    assert time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert "'no-such-org/no-such-model' is not available" in err and "hf download" in err
    assert not (tmp_path / "out").exists()


def test_a_model_folder_without_tokenizer_files_is_named(tmp_path, tiny_sd, guides, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (model / "tokenizer" / name).unlink(missing_ok=True)
    assert main(dream_cmd(guides, tmp_path / "out", model)) == 1
    assert f"model folder {model} has no tokenizer files" in capsys.readouterr().err


def test_a_two_token_tokenizer_is_refused(tmp_path, tiny_sd):
    """transformers loads a tokenizer folder without vocabulary as a 2-token tokenizer."""
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    (model / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(DreamshiftError, match="has 2 tokens: its vocabulary files are missing"):
        Dreamer(model, "img2img", "DDIMScheduler", {}, resolve_runtime("cpu"))


def test_an_unknown_placeholder_fails_before_any_image(tmp_path, tiny_sd, guides, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text('templates:\n  - "a ${colour} ${class_name}"\n')
    assert main(dream_cmd(guides, tmp_path / "out", tiny_sd, "--prompts", str(recipe))) == 1
    err = capsys.readouterr().err
    assert str(recipe) in err and "['colour']" in err
    assert not (tmp_path / "out").exists()


def test_a_recipe_missing_a_background_phrase_is_refused(tmp_path, tiny_sd, guides, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        'templates:\n  - "a ${class_name} ${background}"\nbackgrounds:\n  grass: on grass\n'
    )
    assert main(dream_cmd(guides, tmp_path / "out", tiny_sd, "--prompts", str(recipe))) == 1
    assert "no entry for the backgrounds ['snow']" in capsys.readouterr().err


def test_d3s_prompt_is_the_papers_template():
    recipe = load_recipe("d3s")
    assert recipe.render(0, "giraffe", "cave") == (
        "a photo of a giraffe, a tall African mammal with a very long neck and spotted coat, "
        "in a cave"
    )
    assert len(recipe.backgrounds) == 10


def test_a_changed_setting_is_not_mixed_into_an_existing_run(tmp_path, tiny_sd, guides, capsys):
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, tiny_sd, "--splits", "test")) == 0
    before = images_and_rows(out)
    assert (
        main([*dream_cmd(guides, out, tiny_sd, "--splits", "test"), "--guidance-scale", "3"]) == 1
    )
    assert "differs in ['guidance_scale', 'resolved']" in capsys.readouterr().err
    assert images_and_rows(out) == before


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs_and_is_deterministic(tiny_sd, name):
    from dreamshift.models.diffusion import resolve_scheduler

    cls_name, config = resolve_scheduler(tiny_sd, name)
    assert cls_name == SCHEDULERS[name][0]
    dreamer = Dreamer(tiny_sd, "txt2img", cls_name, config, resolve_runtime("cpu", threads=1))
    assert type(dreamer.pipe.scheduler).__name__ == cls_name
    reqs = [Request("a photo of a cat", "", 7), Request("a dog", "", 8)]
    a = dreamer.generate(reqs, 2, 1.0, 2.0, 64, 64)
    b = dreamer.generate(reqs[1:], 2, 1.0, 2.0, 64, 64)
    assert a[0].shape == (64, 64, 3) and (a[1] == b[0]).all()
    assert not (a[0] == a[1]).all()


def test_the_shard_stats_say_how_long_and_how_many(tmp_path, tiny_sd, guides):
    out = tmp_path / "dream"
    assert main(dream_cmd(guides, out, tiny_sd, "--shard-size", "8")) == 0
    stats = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("*.done"))]
    assert [s["count"] for s in stats] == [8, 4]
    assert all(s["ok"] == s["count"] and s["failed"] == 0 and s["seconds"] > 0 for s in stats)
    table = pq.read_table(out / "manifest.parquet")
    assert table.num_rows == 12 and table.schema.equals(ds.MANIFEST_SCHEMA)


def test_a_config_file_is_read_and_flags_win(tmp_path, tiny_sd, guides, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_sd}\nsteps: 3\nstrength: 0.6\nsplits: [test]\n")
    out = tmp_path / "dream"
    argv = ["dream", str(guides), "--out", str(out), "--config", str(config), "--steps", "2"]
    assert main([*argv, "--no-progress"]) == 0
    made = rows(out)
    assert len(made) == 4 and {(r["steps"], r["strength"]) for r in made} == {(2, 0.6)}
    assert main([*argv, "--strength", "0.4"]) == 1  # int(2 * 0.4) = 0 denoising steps
    assert "runs no denoising step" in capsys.readouterr().err
    config.write_text("stepz: 3\n")
    assert main([*argv, "--no-progress"]) == 1
    assert "unknown dream config key(s) ['stepz']" in capsys.readouterr().err


def test_the_source_is_never_the_output(tiny_sd, guides, capsys):
    before = images_and_rows(guides)
    assert main(dream_cmd(guides, guides, tiny_sd)) == 1
    assert "is the source dataset" in capsys.readouterr().err
    assert images_and_rows(guides) == before


def test_backgrounds_are_dreamed_per_label_and_compose_takes_them(tmp_path, tiny_sd):
    from dreamshift.dream.backgrounds import make_backgrounds, plan_path

    out = tmp_path / "bgs"
    result = make_backgrounds(out, ["grass", "snow"], 2, model=str(tiny_sd), steps=2,
                              progress=False)  # fmt: skip
    assert (result.num_samples, result.num_failed) == (4, 0)
    rows = ds.read_manifest(out).to_pylist()
    assert [r["bg_class"] for r in rows] == ["grass", "grass", "snow", "snow"]
    assert [r["prompt"] for r in rows] == ["a photo of grass"] * 2 + ["a photo of snow"] * 2
    assert all(r["pipeline"] == "txt2img" and r["fg_class"] is None for r in rows)
    assert len({r["seed"] for r in rows}) == 4 and len({r["sha256"] for r in rows}) == 4
    again = make_backgrounds(out, ["grass", "snow"], 2, model=str(tiny_sd), steps=2,
                             progress=False)  # fmt: skip
    assert again.shards_run == 0  # a rerun resumes: nothing to make
    assert main(["compose", "--out", str(tmp_path / "paste"), "--backgrounds", str(out),
                 "--classes", "cat,dog", "--train-size", "8", "--val-per-group", "0",
                 "--test-per-group", "1", "--anti-per-group", "0"]) == 0  # fmt: skip
    used = {r["bg_source"] for r in ds.read_manifest(tmp_path / "paste").to_pylist()}
    assert used <= {r["path"] for r in rows} and len(used) > 1
    cfg = DreamConfig(source=str(plan_path(out)), mode="img2img", model=str(tiny_sd))
    with pytest.raises(DreamshiftError, match="label plan"):
        dream(cfg, tmp_path / "no", progress=False)


def test_diffusers_puts_the_unconditional_rows_first_as_the_per_sample_hook_assumes():
    """Batch invariance (models/diffusion.py ``_PerSample``) relies on diffusers' classifier-free
    guidance layout: the UNet's batch is cat([negative_1..B, positive_1..B]). A diffusers
    release that changes it fails here, not silently in the pixels."""
    import torch

    from dreamshift.models.diffusion import locate_model, resolve_scheduler

    path = locate_model("tiny-dream").path
    name, config = resolve_scheduler(path, "ddim")
    dreamer = Dreamer(path, "txt2img", name, config, resolve_runtime("cpu", "float32"))
    seen: list[torch.Tensor] = []
    hook = dreamer.pipe.unet.forward

    def spy(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        seen.append(encoder_hidden_states.detach().clone())
        return hook(sample, timestep, encoder_hidden_states, *args, **kwargs)

    dreamer.pipe.unet.forward = spy
    requests = [Request("a photo of a zebra, snow", "", 0), Request("a photo of a cat", "dark", 1)]
    dreamer.generate(requests, 1, 1.0, 7.5, 64, 64)
    embeds = [dreamer._encode(r.prompt, r.negative_prompt, True) for r in requests]
    assert torch.equal(seen[0], torch.cat([e[1] for e in embeds] + [e[0] for e in embeds]))
