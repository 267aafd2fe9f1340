"""The Shapes world: deterministic from its seed, captions say exactly the shared and text-only factors."""
import numpy as np

from engine.datasets import shapes
from engine.datasets.shapes import ShapesConfig, ShapesWorld


def test_same_seed_same_items_any_slice():
    a, b = ShapesWorld(ShapesConfig(n=50, seed=3)), ShapesWorld(ShapesConfig(n=10, seed=3))
    for i in (0, 7):
        ia, ca, fa = a[i]
        ib, cb, fb = b[i]
        assert np.array_equal(np.asarray(ia), np.asarray(ib)) and ca == cb and fa == fb
    c = ShapesWorld(ShapesConfig(n=10, seed=4))
    assert any(c.factors(i) != a.factors(i) for i in range(10))


def test_caption_mentions_shared_and_text_factors_only():
    f = {"shape": "star", "colour": "blue", "size": "small", "position": "top",
         "background": "stripes", "tone": "dark", "template": "t2", "ending": "bang"}
    assert shapes.caption(f) == "there is a small star in blue at the top!"
    world = ShapesWorld(ShapesConfig(n=200, seed=0))
    for i in range(200):
        _, cap, f = world[i]
        words = cap.replace(",", " ").replace(".", " ").replace("!", " ").split()
        for k in shapes.SHARED:
            assert f[k] in words
        for k in shapes.IMAGE_ONLY:
            assert f[k] not in words
        assert cap == shapes.TEMPLATES[int(f["template"][1:])].format(**f) + shapes.ENDINGS[f["ending"]]


def test_image_shows_colour_and_position_but_not_caption_style():
    world = ShapesWorld(ShapesConfig(n=300, seed=1, image_size=64))
    for i in range(40):
        im, _, f = world[i]
        x = np.asarray(im).astype(int)
        target = np.array(shapes.RGB[f["colour"]])
        mask = np.abs(x - target).sum(-1) < 60  # pixels of the shape's colour
        assert mask.sum() > 20, f
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean() / 64, xs.mean() / 64
        expect = {"left": cx < 0.45, "right": cx > 0.55, "top": cy < 0.45, "bottom": cy > 0.55}[f["position"]]
        assert expect, (f, cx, cy)
    # factors are balanced enough to learn: every value of every factor occurs
    seen = {k: {world.factors(i)[k] for i in range(300)} for k in shapes.ALL_FACTORS}
    assert all(seen[k] == set(v) for k, v in shapes.ALL_FACTORS.items())
