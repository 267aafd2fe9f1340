"""Keys cover every input by content: changing an input changes the key, moving folders does not."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from engine.config import array_hash
from engine.datasets.sources import resolve
from engine.encoders import Encoder, ModelSpec
from engine.precompute import cache_key


def _dataset(folder, colour=(200, 10, 10)):
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), colour if i == 0 else (i * 40, 0, 0)).save(folder / f"{i}.png")
    (folder / "caps.csv").write_text("image,caption\n" + "".join(f"{i}.png,picture {i}\n" for i in range(3)))
    return folder / "caps.csv"


def test_captions_key_follows_image_bytes_not_folder(tmp_path):
    csv = _dataset(tmp_path / "a")
    key = resolve(str(csv)).identity()
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(tmp_path / "a", moved)
    assert resolve(str(moved / "caps.csv")).identity() == key          # moving the folder: same key
    Image.new("RGB", (8, 8), (0, 0, 255)).save(moved / "0.png")          # one image's bytes change
    assert resolve(str(moved / "caps.csv")).identity() != key
    (tmp_path / "a" / "caps.csv").write_text((tmp_path / "a" / "caps.csv").read_text().replace("picture 2", "photo 2"))
    assert resolve(str(tmp_path / "a" / "caps.csv")).identity() != key   # the captions' bytes change


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    import open_clip

    model = open_clip.create_model("geolens-tiny")
    folder = tmp_path_factory.mktemp("w")
    path = folder / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_model_key_follows_weight_bytes_not_path(weights, tmp_path):
    enc = Encoder(ModelSpec("geolens-tiny", str(weights)), device="cpu")
    moved = tmp_path / "other" / "renamed.safetensors"
    moved.parent.mkdir()
    shutil.copyfile(weights, moved)
    enc_moved = Encoder(ModelSpec("geolens-tiny", str(moved)), device="cpu")
    assert enc_moved.identity() == enc.identity()
    src = resolve("shapes", n=8)
    assert cache_key(src, enc_moved) == cache_key(src, enc)
    from safetensors.torch import load_file

    state = load_file(str(moved))
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    save_file(state, str(moved))
    assert Encoder(ModelSpec("geolens-tiny", str(moved)), device="cpu").identity() != enc.identity()


def test_cache_key_changes_with_dataset_settings_and_code_version(weights, monkeypatch):
    enc = Encoder(ModelSpec("geolens-tiny", str(weights)), device="cpu")
    base = cache_key(resolve("shapes", n=8), enc)
    assert cache_key(resolve("shapes", n=9), enc) != base
    assert cache_key(resolve("shapes", n=8, seed=1), enc) != base
    import engine.precompute as pre

    monkeypatch.setattr(pre, "ENGINE_VERSION", "test-next")
    assert cache_key(resolve("shapes", n=8), enc) != base


def test_array_hash_is_by_content():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert array_hash(a) == array_hash(a.copy()) == array_hash(torch.from_numpy(a))
    assert array_hash(a.reshape(3, 2)) != array_hash(a)            # shape
    assert array_hash(a.astype(np.float64)) != array_hash(a)       # dtype
    b = a.copy()
    b[0, 0] = 0.5
    assert array_hash(b) != array_hash(a)


def test_character_data_key_follows_the_drawn_pixels(monkeypatch):
    """The geodesics character data is keyed by its pixels, so Pillow's font is an input."""
    import engine.geodesics.data as D

    imgs, _, _ = D.rotated_characters("urc", 14, seed=0)
    before = array_hash(imgs)
    real = D.render_character
    monkeypatch.setattr(D, "render_character", lambda c, *a, **k: np.roll(real(c, *a, **k), 1, axis=1))
    assert array_hash(D.rotated_characters("urc", 14, seed=0)[0]) != before
