"""Fuzzing what dreamshift opens that someone else made (the threat model in the README):
manifest paths, ``dataset.json``, ``manifest.parquet`` bytes, checkpoint headers, run-folder
JSON and the review app's requests. The property is always the same: a clear error
(:class:`DreamshiftError`, one line) or a correct result; never a traceback, never a file
outside the folder. Derandomized (the same cases every run) and bounded in examples."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import small_config
from dreamshift.compose.config import ShiftRecipe
from dreamshift.compose.runner import compose
from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)  # what an HTTP client sends
PATH_PARTS = st.sampled_from(
    [
        "shards",
        "00000",
        "..",
        ".",
        "",
        "review",
        "mask",
        "image",
        "review.sqlite",
        "a.png",
        "dataset.json",
        ".git",
        "x.PNG",
        "/",
        "\\",
        "%2e%2e",
    ]
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    recipe = ShiftRecipe(train_size=4, val_per_group=0, test_per_group=1, anti_per_group=0)
    root = tmp_path_factory.mktemp("fuzz") / "paste"
    compose(small_config(classes=("cat", "dog"), background_names=("grass", "snow"),
                         recipe=recipe), root, progress=False)  # fmt: skip
    return root


@FUZZ
@given(st.lists(PATH_PARTS, min_size=1, max_size=5).map("/".join) | st.text(max_size=30))
def test_a_manifest_path_is_refused_or_names_an_image_inside_the_dataset(dataset, path):
    table = pa.table({"path": pa.array([path], pa.string())})
    try:
        ds.check_paths(table, dataset / ds.MANIFEST)
    except DreamshiftError as exc:
        assert "\n" not in str(exc).replace(path, "")
        assert ds.sample_file(dataset, path) is None
        return
    parts = path.split("/")
    assert not path.startswith("/") and ".." not in parts and parts[0] != "review"
    assert not any(p.startswith(".") or not p for p in parts)
    found = ds.sample_file(dataset, path)
    assert found is None or dataset.resolve() in found.parents


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "stage",
                "classes",
                "backgrounds",
                "splits",
                "config",
                "label_maps",
                "num_shards",
                "complete",
                "assignment",
                "schema_version",
                "num_samples",
                "rho",
            ]
        ),
        JSON,
    )
)
def test_a_damaged_dataset_json_is_one_clear_error(dataset, tmp_path_factory, fields):
    root = tmp_path_factory.mktemp("meta")
    good = json.loads((dataset / ds.DATASET_JSON).read_text())
    (root / ds.DATASET_JSON).write_text(json.dumps(good | fields))
    shutil.copyfile(dataset / ds.MANIFEST, root / ds.MANIFEST)
    try:
        meta = ds.DatasetMeta.read(root)
        ds.read_manifest(root)
        meta.label_maps, meta.recipe, meta.confounder_strength  # noqa: B018
    except DreamshiftError:
        pass


@FUZZ
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_a_damaged_manifest_file_is_one_clear_error(dataset, tmp_path_factory, at, junk):
    root = tmp_path_factory.mktemp("manifest")
    shutil.copyfile(dataset / ds.DATASET_JSON, root / ds.DATASET_JSON)
    data = bytearray((dataset / ds.MANIFEST).read_bytes())
    at %= len(data)
    data[at : at + len(junk)] = junk
    (root / ds.MANIFEST).write_bytes(bytes(data))
    with contextlib.suppress(DreamshiftError):
        ds.read_rows(root)


@FUZZ
@given(JSON)
def test_a_checkpoint_header_holding_any_json_is_one_clear_error(tmp_path_factory, structure):
    import torch
    from safetensors.torch import save_file

    from dreamshift.train.checkpoint import load_state

    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    save_file(
        {"t0": torch.zeros(2)}, str(path), metadata={"dreamshift_state": json.dumps(structure)}
    )
    with contextlib.suppress(DreamshiftError):
        assert isinstance(load_state(path), dict)


@FUZZ
@given(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.lists(PATH_PARTS | st.text(PRINTABLE, max_size=6), max_size=4).map("/".join),
    st.binary(max_size=600) | JSON.map(lambda j: json.dumps(j).encode()),
    st.dictionaries(st.sampled_from(["origin", "x-csrf-token", "content-type"]),
                    st.text(PRINTABLE, max_size=20)),
    st.booleans(),
)  # fmt: skip
def test_the_review_app_answers_any_request_without_an_error_or_a_file_outside(
    review_client, method, tail, body, headers, authentic
):
    """``authentic``: with the reviewer's own origin and CSRF token, so the body is read."""
    client, token, csrf = review_client
    if authentic:
        headers = headers | {"origin": "http://127.0.0.1", "x-csrf-token": csrf}
    for prefix in (f"/r/{token}/", "/r/"):
        answer = client.request(method, prefix + tail, content=body, headers=headers)
        assert answer.status_code < 500, (method, prefix + tail, answer.text[:200])
        assert b"SQLite format 3" not in answer.content  # the review database: every token
        assert b"schema_version" not in answer.content and b"PAR1" not in answer.content


@pytest.fixture(scope="module")
def review_client(dataset):
    from starlette.testclient import TestClient

    from dreamshift.verify.review import add_reviewer, build_app, open_store

    token = add_reviewer(dataset, "fuzz").rstrip("/").rsplit("/", 1)[1]
    client = TestClient(build_app(dataset), base_url="http://127.0.0.1",
                        raise_server_exceptions=False)  # fmt: skip
    return client, token, open_store(dataset).reviewer(token).csrf


@pytest.fixture(scope="module")
def learn_run(dataset, tmp_path_factory) -> Path:
    from dreamshift.learn.config import LearnConfig
    from dreamshift.learn.run import learn

    cfg = LearnConfig(epochs=1, batch_size=4, input_size=32, eval_splits=())
    return learn(dataset, tmp_path_factory.mktemp("runs"), cfg, log=lambda *_: None)


@FUZZ
@given(st.sampled_from(["config.json", "dreamshift-folder.json"]),
       st.dictionaries(st.sampled_from(["config", "classes", "backgrounds", "kind",
                                        "preprocessing", "base_weights_sha256"]), JSON)
       | JSON)  # fmt: skip
def test_a_run_folder_with_damaged_json_is_one_clear_error(learn_run, tmp_path_factory, name,
                                                            value):  # fmt: skip
    """What `audit --model RUN` opens: the run's record and its kind marker."""
    from dreamshift.models.loading import load_classifier

    folder = tmp_path_factory.mktemp("run") / learn_run.name
    shutil.copytree(learn_run, folder)
    original = json.loads((folder / name).read_text())
    damaged = original | value if isinstance(value, dict) else value
    (folder / name).write_text(json.dumps(damaged))
    with contextlib.suppress(DreamshiftError):
        load_classifier(str(folder))


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["architecture", "classes", "preprocessing", "name", "finetuned_from", "finetune"]
        ),
        JSON,
    )
    | JSON
)
def test_a_classifier_folder_with_a_damaged_record_is_one_clear_error(tmp_path_factory, value):
    """A classifier folder (the shipped world-cnn's files) whose classifier.json is damaged."""
    from dreamshift.assets import shipped
    from dreamshift.models.loading import load_classifier

    folder = tmp_path_factory.mktemp("clf") / "world-cnn"
    shutil.copytree(shipped("classifiers") / "world-cnn", folder)
    original = json.loads((folder / "classifier.json").read_text())
    damaged = original | value if isinstance(value, dict) else value
    (folder / "classifier.json").write_text(json.dumps(damaged))
    with contextlib.suppress(DreamshiftError):
        load_classifier(str(folder))
