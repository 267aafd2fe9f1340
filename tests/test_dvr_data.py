"""dvr data: Omniglot's layout and split, preprocessing, the Hershey stroke set, samples folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.dvr import omniglot, samples, strokes


def _png(path: Path, box: tuple[int, int, int, int], side: int = 105) -> None:
    a = np.full((side, side), 255, np.uint8)  # white background, black ink like Omniglot
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).convert("1").save(path)


@pytest.fixture
def tiny_omniglot(tmp_path) -> Path:
    for folder, alpha in (("images_background", "Alpha"), ("images_evaluation", "Beta")):
        for c in range(1, 5):
            for d in range(1, 4):
                _png(tmp_path / folder / alpha / f"character{c:02d}" / f"{c:04d}_{d:02d}.png",
                     (10 * c, 5 * d, 10 * c + 20, 5 * d + 30))
    return tmp_path


def test_scan_and_paper_split(tiny_omniglot):
    classes = omniglot.scan(tiny_omniglot)
    assert len(classes) == 8
    train, test = omniglot.paper_split(classes)
    assert [c.name for c in test] == [f"Alpha__character{i:02d}" for i in (1, 2, 3)] + [f"Beta__character{i:02d}" for i in (1, 2, 3)]
    assert [c.name for c in train] == ["Alpha__character04", "Beta__character04"]
    assert all(len(c.paths) == 3 for c in classes)


def test_load_split_shapes_and_exemplar(tiny_omniglot):
    data = omniglot.load_split(tiny_omniglot)
    assert data.train_x.shape == (6, 50, 50) and data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test_x.shape == (6, 3, 50, 50)
    assert data.exemplars.shape == (6, 50, 50) and data.humans.shape == (6, 2, 50, 50)
    first = omniglot.to_ink(Image.open(tiny_omniglot / "images_background/Alpha/character01/0001_01.png"))
    np.testing.assert_array_equal(data.exemplars[0], first)
    assert set(np.unique(data.test_x)) <= {0.0, 1.0}


def test_scan_names_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_background"):
        omniglot.scan(tmp_path)


def test_to_ink_hand():
    a = np.full((100, 100), 255, np.uint8)
    a[:50, :50] = 0  # black square, top-left quarter
    ink = omniglot.to_ink(Image.fromarray(a))
    expected = np.zeros((50, 50), np.float32)
    expected[:25, :25] = 1
    np.testing.assert_array_equal(ink, expected)
    # white-on-black input is detected and gives the same ink
    np.testing.assert_array_equal(omniglot.to_ink(Image.fromarray(255 - a)), expected)


def test_parse_jhf_hand():
    text = "    1  6JZNFNM RVFVM\n    2  4JZRF\nRT RR\n"
    g = strokes.parse_jhf(text)
    assert len(g) == 2
    np.testing.assert_array_equal(g[0][0], [[-4, -12], [-4, -5]])
    np.testing.assert_array_equal(g[0][1], [[4, -12], [4, -5]])
    # wrapped record: pairs "RF", "RT", " R" -> one stroke of 2 points
    np.testing.assert_array_equal(g[1][0], [[0, -12], [0, 2]])


def test_stroke_set_size_and_writing_systems():
    cfg = strokes.StrokeSetConfig()
    total = 0
    systems = set()
    for name in strokes.ALPHABETS:
        total += len(strokes.alphabet_glyphs(name, cfg.chars_per_alphabet))
        systems.add(strokes.ALPHABETS[name][0])
    assert total >= 100 and len(systems) >= 5
    assert cfg.drawers == 20


def test_stroke_set_layout_and_variation(tmp_path):
    cfg = strokes.StrokeSetConfig(chars_per_alphabet=4, drawers=5)
    root = strokes.build_stroke_set(cfg, root=tmp_path / "s", alphabets=["Greek_upper", "Japanese_1"])
    classes = omniglot.scan(root)
    assert len(classes) == 8 and all(len(c.paths) == 5 for c in classes)
    img = Image.open(classes[0].paths[0])
    assert img.size == (105, 105) and img.mode == "1"
    ink = omniglot.load_images(classes[0].paths)
    assert 0.01 < ink.mean() < 0.4  # strokes, not blank nor filled
    assert len({a.tobytes() for a in ink}) == 5  # every drawer draws it differently
    again = strokes.build_stroke_set(cfg, root=tmp_path / "t", alphabets=["Greek_upper", "Japanese_1"])
    assert (again / "images_background/Greek_upper/character01/0001_01.png").read_bytes() == classes[0].paths[0].read_bytes()


def test_samples_folder_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    ex = (rng.random((2, 50, 50)) > 0.7).astype(np.float32)
    s = (rng.random((2, 3, 50, 50)) > 0.7).astype(np.float32)
    samples.write_model(tmp_path / "root", "m1", ["a__character01", "b__character01"], ex, s, {"family": "vae"})
    ms = samples.read_model(tmp_path / "root" / "m1")
    assert ms.classes == ["a__character01", "b__character01"] and ms.meta == {"family": "vae"}
    np.testing.assert_array_equal(ms.exemplars, ex)
    np.testing.assert_array_equal(ms.samples, s)
    with pytest.raises(ValueError, match="folder \\*above\\*"):
        samples.model_folders(tmp_path / "root" / "m1")
    (tmp_path / "root" / "m1" / "a__character01" / "exemplar.png").unlink()
    with pytest.raises(ValueError, match="no exemplar.png"):
        samples.read_model(tmp_path / "root" / "m1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        samples.model_folders(tmp_path / "nope")
