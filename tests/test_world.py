"""The embedded world: silhouettes, splits, backgrounds, appearance (coats), photos."""

from __future__ import annotations

import gzip
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from dreamshift.errors import DreamshiftError
from dreamshift.seeding import derive_seed, rng_for
from dreamshift.world import animals
from dreamshift.world.appearance import COATS, RANDOM, TEXTURES, _colour, paint_silhouette
from dreamshift.world.backgrounds import BACKGROUNDS, render_background
from dreamshift.world.photo import render_photo


def test_silhouettes_load_with_labels_and_shape_disjoint_splits():
    sil = animals.load_silhouettes()
    assert sil.masks.shape == (10000, 28, 28)
    assert np.bincount(sil.labels).tolist() == [1000] * 10
    seen = {
        s: {sil.masks[i].tobytes() for c in animals.CLASSES for i in sil.indices(s, c)}
        for s in animals.SPLITS
    }
    assert not seen["train"] & seen["test"]
    assert not seen["train"] & seen["val"]
    assert not seen["val"] & seen["test"]
    per_class_test = [len(sil.indices("test", c)) for c in animals.CLASSES]
    assert min(per_class_test) >= 80  # about 10 % of each class's distinct shapes


def test_unpickler_admits_numpy_arrays_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = pickle.dumps(Evil())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        animals._NumpyOnlyUnpickler(io.BytesIO(blob)).load()
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "a.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(arr, f)
    assert np.array_equal(animals._load_array(path), arr)


def test_missing_package_error_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(animals.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DreamshiftError, match=r"pip install --no-deps animal-mnist==0\.4"):
        animals.data_dir()


@pytest.mark.parametrize("name", BACKGROUNDS)
def test_background_is_deterministic_and_varies_with_seed(name):
    a = render_background(name, seed=7, size=64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_background(name, seed=7, size=64))
    assert not np.array_equal(a, render_background(name, seed=8, size=64))
    wide = render_background(name, seed=7, size=(96, 48))
    assert wide.shape == (48, 96, 3)


def test_unknown_background_lists_the_choices():
    with pytest.raises(DreamshiftError, match=r"unknown background 'lava'.*grass"):
        render_background("lava", 0)


def _features(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32) / 255
    top, bottom = x[: len(x) // 2], x[len(x) // 2 :]
    grad = np.abs(np.diff(x, axis=0)).mean((0, 1)), np.abs(np.diff(x, axis=1)).mean((0, 1))
    return np.concatenate([top.mean((0, 1)), bottom.mean((0, 1)), x.std((0, 1)), *grad])


def test_backgrounds_are_recognisable_across_seeds():
    """A nearest-centroid classifier on simple colour statistics, fitted on some seeds, names
    the scene of unseen seeds: each kind keeps its identity while varying per seed."""
    train = {b: [_features(render_background(b, s)) for s in range(20)] for b in BACKGROUNDS}
    centroids = np.stack([np.mean(v, 0) for v in train.values()])
    scale = np.std(np.concatenate(list(train.values())), 0) + 1e-6
    correct = 0
    for k, b in enumerate(BACKGROUNDS):
        for s in range(1000, 1020):
            f = _features(render_background(b, s))
            correct += int(np.argmin((((centroids - f) / scale) ** 2).sum(1)) == k)
    assert correct / (20 * len(BACKGROUNDS)) >= 0.9


def test_painted_silhouette_keeps_the_shape_and_varies_the_colour():
    sil = animals.load_silhouettes()
    mask = sil.masks[int(sil.indices("train", "giraffe")[0])]
    a, pa = paint_silhouette(mask, rng_for(1), 56, flip=False, max_rotation=0)
    b, pb = paint_silhouette(mask, rng_for(1), 56, flip=False, max_rotation=0)
    c, pc = paint_silhouette(mask, rng_for(2), 56, flip=False, max_rotation=0)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and pa == pb
    assert max(a.size) == 56
    assert np.array_equal(np.asarray(a.getchannel("A")), np.asarray(c.getchannel("A")))
    assert pa["colour"] != pc["colour"]


def _coat_pixels(coat: str, seed: int) -> np.ndarray:
    """The (N, 3) colours in [0, 1] of one horse silhouette painted in ``coat``."""
    sil = animals.load_silhouettes()
    mask = sil.masks[int(sil.indices("train", "horse")[0])]
    img, _ = paint_silhouette(mask, rng_for(seed), 48, flip=False, max_rotation=0, coat=coat)
    a = np.asarray(img, np.float32) / 255
    return a[..., :3][a[..., 3] > 0.5]


@pytest.mark.parametrize("coat", list(COATS))
def test_typical_coat_is_deterministic_per_rng_and_named_in_the_parameters(coat):
    mask = animals.load_silhouettes().masks[0]
    a, pa = paint_silhouette(mask, rng_for(3), 40, flip=True, max_rotation=10, coat=coat)
    b, pb = paint_silhouette(mask, rng_for(3), 40, flip=True, max_rotation=10, coat=coat)
    c, _ = paint_silhouette(mask, rng_for(4), 40, flip=True, max_rotation=10, coat=coat)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and pa == pb
    assert not np.array_equal(np.asarray(a), np.asarray(c))  # within-class variation
    assert pa["coat"] == coat and pa["texture"] == COATS[coat].texture


def test_typical_coats_tell_a_zebra_from_a_horse():
    """Same silhouette, twenty seeds: a zebra coat is black-and-white stripes (grey on average,
    high contrast), a horse coat a smooth red-brown."""
    zebra = [_coat_pixels("zebra", s) for s in range(20)]
    horse = [_coat_pixels("horse", s) for s in range(20)]
    mean_z = np.mean([z.mean(0) for z in zebra], 0)
    mean_h = np.mean([h.mean(0) for h in horse], 0)
    assert np.linalg.norm(mean_z - mean_h) > 0.25
    for z, h in zip(zebra, horse, strict=True):
        assert z.std(0).mean() > 0.25 and h.std(0).mean() < 0.15  # contrast
        r, _, b = z.mean(0)
        assert abs(r - b) < 0.1  # no colour cast
        r, _, b = h.mean(0)
        assert r - b > 0.2  # red-brown


def test_random_coat_draws_as_before_coats_existed():
    """``coat="random"`` is the shape-only world of earlier datasets: the same parameter keys
    (plus ``coat``) and the same draws in the same order, so their pixels stand."""
    mask = animals.load_silhouettes().masks[0]
    _, params = paint_silhouette(mask, rng_for(5), 40, flip=True, max_rotation=10, coat=RANDOM)
    assert set(params) == {"coat", "texture", "colour", "colour2", "light", "flip", "rotation"}
    assert params["coat"] == RANDOM and params["texture"] in TEXTURES
    rng = rng_for(5)  # the legacy order: texture, colour, colour2
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    c1, c2 = _colour(rng), _colour(rng)
    assert params["texture"] == texture
    assert params["colour"] == [round(float(v), 4) for v in c1]
    assert params["colour2"] == [round(float(v), 4) for v in c2]
    default, _ = paint_silhouette(mask, rng_for(5), 40, flip=True, max_rotation=10)
    again, _ = paint_silhouette(mask, rng_for(5), 40, flip=True, max_rotation=10, coat=RANDOM)
    assert np.array_equal(np.asarray(default), np.asarray(again))  # the function's default


def test_photo_keeps_the_size_and_takes_the_scene_light():
    cut = Image.new("RGBA", (12, 10), (245, 245, 245, 255))  # a bright animal
    box = (slice(13, 21), slice(12, 20))  # inside the cut-out pasted at (10, 12)
    for seed in range(3):
        lit = {}
        for scene in ("night", "snow"):
            bg = Image.fromarray(render_background(scene, seed, 32))
            img, params = render_photo(bg, cut, 10, 12, scene, rng_for(seed))
            same, _ = render_photo(bg, cut, 10, 12, scene, rng_for(seed))
            assert img.size == (32, 32) and img.mode == "RGB"
            assert np.array_equal(np.asarray(img), np.asarray(same))
            assert params["render"] == "photo"
            lit[scene] = float(np.asarray(img, np.float32)[box].mean())
        assert lit["night"] < 160 and lit["snow"] > 200
    wide = Image.new("RGB", (48, 24), (90, 120, 60))
    assert render_photo(wide, cut, 30, 10, "lava", rng_for(0))[0].size == (48, 24)


def test_derive_seed_is_stable():
    assert derive_seed(0, "x") == derive_seed(0, "x")
    assert derive_seed(0, "x") != derive_seed(1, "x")
    assert 0 <= derive_seed("anything") < 2**63
