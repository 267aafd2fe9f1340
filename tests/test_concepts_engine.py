"""Concept engine: Sobol estimator on closed forms, exact logit decomposition, NMF, crops, fidelity,
classifier adapters (split contract; EfficientNet-Lite0 on real photos), and the pipeline end to end."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from engine.concepts import craft, fidelity, importance, sobol


# ----------------------------------------------------------------------------- Sobol
def test_design_c_matrices_swap_one_column():
    a, b, c = sobol.design(d=3, n=8, seed=1)
    assert a.shape == b.shape == (8, 3) and c.shape == (3, 8, 3)
    for i in range(3):
        others = [j for j in range(3) if j != i]
        np.testing.assert_array_equal(c[i][:, i], b[:, i])
        np.testing.assert_array_equal(c[i][:, others], a[:, others])
    assert sobol.stacked(a, b, c).shape == (8 * 5, 3)


def test_jansen_hand_computed():
    # f_A = [0, 2] → Var = 1; f_C1 = [1, 2] → Σ (f_A − f_C)² = 1 → S_T = 1 / (2·2·1) = 0.25
    st = sobol.jansen_total(np.array([0.0, 2.0]), np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(st, [0.25])
    assert sobol.jansen_total(np.array([1.0, 1.0]), np.array([[0.0, 3.0]]))[0] == 0.0  # constant output


def _ishigami_truth(a=7.0, b=0.1):
    v = a**2 / 8 + b * np.pi**4 / 5 + b**2 * np.pi**8 / 18 + 0.5
    v1, v2, v13 = 0.5 * (1 + b * np.pi**4 / 5) ** 2, a**2 / 8, b**2 * np.pi**8 * (1 / 18 - 1 / 50)
    return np.array([(v1 + v13) / v, v2 / v, v13 / v])


@pytest.mark.parametrize("sampler,tol", [("sobol", 0.01), ("halton", 0.015)])
def test_ishigami_total_indices(sampler, tol):
    """Known S_T = (0.5576, 0.4424, 0.2437); N = 4096 QMC points (4096·5 evaluations)."""
    def f(u):
        x = (2 * u - 1) * np.pi
        return np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])

    st = sobol.total_indices(f, d=3, n=4096, sampler=sampler, seed=0)
    np.testing.assert_allclose(st, _ishigami_truth(), atol=tol)


def test_additive_function_batched_outputs():
    """f = Σ c_i x_i, x ~ U[0,1]: S_T,i = c_i² / Σ c²; two outputs estimated in one pass."""
    coef = np.array([[1.0, 2.0, 0.0, 3.0], [1.0, 1.0, 1.0, 1.0]])  # (2 outputs, d)
    st = sobol.total_indices(lambda u: u @ coef.T, d=4, n=4096, seed=3)  # (d, 2)
    truth = (coef**2 / (coef**2).sum(1, keepdims=True)).T
    np.testing.assert_allclose(st, truth, atol=0.01)


# ----------------------------------------------------------------------------- importance
def _linear_setup(seed=0, n=7, k=4, c=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(c, classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(classes, c, generator=g))
        head.bias.copy_(torch.randn(classes, generator=g))
    rng = np.random.default_rng(seed)
    u, w = rng.random((n, k)).astype(np.float32), rng.random((k, c)).astype(np.float32)
    acts = (u @ w + 0.1 * rng.random((n, c))).astype(np.float32)
    return u, w, head, acts


def test_gradient_input_is_the_exact_logit_decomposition():
    u, w, head, acts = _linear_setup()
    cls = 1
    dec = importance.logit_decomposition(u, w, head, cls, acts)
    total = dec["terms"].sum(1) + dec["residual"] + dec["bias"]
    np.testing.assert_allclose(total, dec["logit"], rtol=1e-5, atol=1e-5)
    gx = importance.gradient_input(u, w, head, cls, residual=acts - u @ w)
    np.testing.assert_allclose(gx, dec["terms"], rtol=1e-4, atol=1e-5)
    # hand formula: u_i (W_i · w_c)
    wc = head.weight.detach().numpy()[cls]
    np.testing.assert_allclose(gx, u * (w @ wc)[None], rtol=1e-4, atol=1e-5)


def test_percent_of_logit_hand_computed():
    pct = importance.percent_of_logit(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(pct, [40.0, 60.0])


def test_sobol_importance_of_a_linear_head():
    """y(m) = Σ_i m_i u_i a_i + b with m ~ U[0,1]: S_T,i = (u_i a_i)² / Σ_j (u_j a_j)²."""
    u, w, head, _ = _linear_setup(n=3)
    cls = 0
    a = w @ head.weight.detach().numpy()[cls]
    st = importance.sobol_importance(u, w, head, cls, n=2048, seed=0)
    truth = (u * a) ** 2 / ((u * a) ** 2).sum(1, keepdims=True)
    np.testing.assert_allclose(st, truth, atol=0.015)


def test_cluster_sizes_and_cosine():
    top = importance.top_concepts(np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.1], [0.0, 1.0, 0.3]]))
    np.testing.assert_array_equal(top, [1, 0, 1])
    sizes, imp = importance.cluster_sizes(top, 3, min_images=2)
    np.testing.assert_array_equal(sizes, [1, 2, 0])
    np.testing.assert_array_equal(imp, [False, True, False])
    np.testing.assert_allclose(importance.cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 2.0]])),
                               [[2**-0.5, 0.0]], atol=1e-7)


# ----------------------------------------------------------------------------- crops + NMF
def test_crop_positions_and_crops():
    assert craft.crop_positions(28, 10, 8) == [(y, x) for y in (0, 8, 16) for x in (0, 8, 16)]
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).reshape(2, 1, 28, 28)
    crops, index = craft.make_crops(x, 14, 14)  # 2×2 crops per image, each upsampled ×2
    assert crops.shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(index[5], [1, 0, 14])
    ref = torch.nn.functional.interpolate(x[1:2, :, 0:14, 14:28], size=(28, 28), mode="bilinear")
    torch.testing.assert_close(crops[5:6], ref)


def test_nmf_reconstructs_low_rank_activations():
    rng = np.random.default_rng(0)
    u0, w0 = rng.random((300, 5)), rng.random((5, 40))
    a = (u0 @ w0).astype(np.float32)
    u, w = craft.fit_nmf(a, 5, seed=0)
    assert craft.relative_error(a, u, w) < 0.01
    u2 = craft.transform(a, w)
    assert craft.relative_error(a, u2, w) < 0.01
    np.testing.assert_allclose(craft.transform(a[:3], w0.astype(np.float32)), u0[:3], atol=1e-3)


# ----------------------------------------------------------------------------- pictures and maps
def test_heatmap_of_overlapping_crops_is_their_average():
    from engine.concepts.render import heat_to_pixels, overlay

    px = heat_to_pixels(np.array([[1.0, 3.0], [5.0, 7.0]]), 3, {"kind": "crops", "patch": 2, "stride": 1})
    np.testing.assert_allclose(px, [[1, 2, 3], [3, 4, 5], [5, 6, 7]])
    sp = heat_to_pixels(np.ones((7, 7)), 28, {"kind": "spatial"})
    assert sp.shape == (28, 28) and np.allclose(sp, 1)
    out = overlay(np.zeros((2, 2), np.uint8), np.array([[0.0, 1.0], [0.0, 0.5]]), (200, 0, 0), alpha=0.5)
    np.testing.assert_array_equal(out[..., 0], [[0, 100], [0, 50]])


def test_concept_map_keeps_cosine_neighbours_together():
    from engine.concepts.layout import concept_map, embed_2d

    w = np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])  # c0 ≡ c1 (cosine 1)
    xy = concept_map(w)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert d[0, 1] < 0.1 * d[0, 2] and d[0, 1] < 0.1 * d[0, 3]
    assert embed_2d(np.ones((3, 5)), "tsne").shape == (3, 2)


# ----------------------------------------------------------------------------- fidelity
def test_fidelity_curve_hand_computed():
    """k=2, W=I, head logits = (2 u0 + u1, 0): deletion of c0 then c1, insertion the reverse."""
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, 0.0]]))
        head.bias.zero_()
    u, w = np.array([[1.0, 1.0]], np.float32), np.eye(2, dtype=np.float32)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731  softmax over (z, 0)
    scores = np.array([[2.0, 1.0]])
    np.testing.assert_allclose(fidelity.curve(u, w, head, 0, scores, "deletion"), [sig(3), sig(1), sig(0)], rtol=1e-6)
    np.testing.assert_allclose(fidelity.curve(u, w, head, 0, scores, "insertion"), [sig(0), sig(2), sig(3)], rtol=1e-6)
    assert fidelity.auc(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)


def test_true_ordering_beats_random():
    u, w, head, _ = _linear_setup(n=50, k=6)
    gx = importance.gradient_input(u, w, head, 0)
    res = fidelity.fidelity(u, w, head, 0, {"gradient_input": gx}, seed=0)
    assert res["gradient_input"]["deletion"]["auc"] < res["random"]["deletion"]["auc"]
    assert res["gradient_input"]["insertion"]["auc"] > res["random"]["insertion"]["auc"]


# ----------------------------------------------------------------------------- classifiers
def _split_builders():
    from engine.concepts import classifiers as C

    return {
        "fmnist-cnn": lambda: C.fmnist_cnn(pretrained=False),
        "efficientnet-lite0": lambda: C.efficientnet_lite0(pretrained=False),
        "torchvision-resnet18": lambda: C.torchvision_classifier("resnet18", pretrained=False),
        "timm-resnet18": lambda: C.timm_classifier("resnet18", pretrained=False),
    }


@pytest.mark.parametrize("name", list(_split_builders()))
def test_classifier_split_contract(name):
    """h(g(x)) == f(x), g(x) ≥ 0, one class name per logit — for every adapter family."""
    clf = _split_builders()[name]()
    torch.manual_seed(0)
    s = clf.input_size
    imgs = (torch.rand(2, s, s, clf.channels) * 255).to(torch.uint8).numpy()
    if clf.channels == 1:
        imgs = imgs[..., 0]
    x = clf.preprocess(imgs)
    assert x.shape == (2, clf.channels, s, s)
    with torch.no_grad():
        a = clf.g(x)
        torch.testing.assert_close(clf.head(a), clf.model(x), rtol=1e-4, atol=1e-4)
    assert a.min() >= 0 and a.shape == (2, clf.head.in_features)
    assert len(clf.class_names) == clf.head.out_features


def test_efficientnet_lite0_classifies_bundled_photos():
    import skimage.data

    from engine.concepts import classifiers
    from engine.concepts.images import _square
    from PIL import Image

    clf = classifiers.load("efficientnet-lite0")
    imgs = np.stack([np.asarray(_square(Image.fromarray(getattr(skimage.data, n)()), 224)) for n in ("coffee", "chelsea")])
    with torch.no_grad():
        top = clf.model(clf.preprocess(imgs)).argmax(1).tolist()
    assert clf.class_names[top[0]] == "espresso"
    assert 281 <= top[1] <= 285, clf.class_names[top[1]]  # ImageNet's domestic cat classes


def test_image_folder(tmp_path):
    from PIL import Image

    from engine.concepts.images import image_folder

    for i, (w, h) in enumerate([(40, 30), (30, 50), (64, 64)]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    s = image_folder(tmp_path, 32)
    assert s.images.shape == (3, 32, 32, 3) and s.names == ["im0.png", "im1.png", "im2.png"]
    assert s.images[2].mean() == 80
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        image_folder(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing", 32)


def test_fashion_mnist_real_data():
    from engine.concepts.fmnist import load_split

    x, y = load_split("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny(cache_root):
    from tests.test_concepts_fixtures import tiny_caches

    return tiny_caches()


def test_reduced_training_accuracy(tiny):
    import json as _json

    from engine.concepts import fmnist
    from tests.test_concepts_fixtures import TRAIN

    path = fmnist.weights_path(fmnist.FmnistTrainConfig(**TRAIN))
    assert path.exists() and path.with_suffix(".json").exists()
    assert _json.loads(path.with_suffix(".json").read_text())["metrics"]["test_accuracy"] > 0.6


def test_pipeline_cache_and_report(tiny):
    from engine import store
    from engine.concepts import cache

    path = tiny["Sneaker"]
    rep = cache.report(path)
    assert rep["n_images"] == 60 and len(rep["importance"]["sobol_total"]) == 10
    assert sum(rep["cluster_sizes"]["gradient_input"]) == 60
    assert rep["reconstruction_error"]["crops"] < 0.5
    for kind, better in (("deletion", min), ("insertion", max)):
        for m in ("gradient_input", "sobol"):
            assert better(rep["fidelity_auc"][kind][m], rep["fidelity_auc"][kind]["random"]) == rep["fidelity_auc"][kind][m]
    # per-image gradient × input + residual + bias = logit, from the cached numbers
    with contextlib.closing(store.connect_ro(path)) as con:
        u = store.fetch_array(con, "SELECT u FROM images ORDER BY row")
        w = store.fetch_array(con, "SELECT vector FROM concepts ORDER BY concept")
    assert u.shape == (60, 10) and w.shape[0] == 10
    manifest = json.loads((path.parent / "manifest.json").read_text())   # the run's config is saved beside it
    assert manifest["kind"] == "concepts" and manifest["config"]["n_concepts"] == 10
    assert len(cache.crops(path)) == 100 and set(cache.layouts_available(path)) == {"tsne", "umap"}


def test_pipeline_caches_one_maco_image_per_concept(tiny):
    from engine.concepts import cache, maco, render

    path = tiny["Sneaker"]
    mc = cache.maco_images(path)
    rep = cache.report(path)["maco"]
    assert list(mc["concept"]) == list(range(10))
    img = render.from_png(bytes(mc["image"][0]))
    assert img.shape == (32, 32, 3) and img.std() > 0  # maco_size=32 in the fixture; grey stored, read as RGB
    assert render.with_alpha(bytes(mc["image"][0]), bytes(mc["alpha"][0])).shape == (32, 32, 4)
    assert all(len(o) == 6 for o in mc["objective"]) and rep["steps"] == 6 and rep["spectrum"] == "fashion-mnist"
    m = cache.meta(path)["maco"]
    assert m["spectrum_key"] == maco.spectrum("fashion-mnist", 32).key and m["seconds_per_concept"] > 0


def test_maco_settings_and_spectrum_are_in_the_cache_key(tiny, monkeypatch):
    from engine.concepts import maco, precompute
    from engine.concepts.images import fashion_mnist_test
    from tests.test_concepts_fixtures import SETTINGS, tiny_classifier

    clf, data = tiny_classifier(), fashion_mnist_test()
    base = precompute.ConceptConfig(class_name="Sneaker", **SETTINGS)
    key = precompute.cache_key(base, clf, data)
    assert precompute.cache_path(base, clf, data) == tiny["Sneaker"]
    for change in ({"maco_steps": 7}, {"maco_size": 48}, {"maco_steps": 0}):
        assert precompute.cache_key(precompute.ConceptConfig(class_name="Sneaker", **{**SETTINGS, **change}),
                                    clf, data) != key
    # a different spectrum source (its files' bytes) changes the key
    monkeypatch.setattr(maco, "spectrum_key", lambda name, size: "another-spectrum")
    assert precompute.cache_key(base, clf, data) != key


def test_important_rule_lives_in_the_engine(tiny):
    from engine.concepts import cache, importance

    c = cache.concepts(tiny["Sneaker"])
    sizes = c["size_sobol"].to_numpy()
    for mi in (0, 5, 10, 61):
        mask = cache.important(c, "sobol", mi)
        np.testing.assert_array_equal(mask, [s >= mi for s in sizes])
        assert cache.report(tiny["Sneaker"], mi)["important_concepts"]["sobol"] == list(np.flatnonzero(mask))
    np.testing.assert_array_equal(importance.is_important(np.array([9, 10, 11]), 10), [False, True, True])
    top = np.array([2, 2, 1, 0, 2])
    assert cache.lasso_summary(top, [0, 1, 2, 99, -1], 3) == {"rows": [0, 1, 2], "concept": 2, "count": 2}


def test_cli_report_prints_the_cached_numbers(tiny):
    from engine import cli
    from engine.concepts import cache
    from tests.test_concepts_fixtures import CLI_ARGS

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["report", "concepts", *CLI_ARGS, "--class", "Sneaker", "--json"]) == 0
    assert json.loads(buf.getvalue()) == json.loads(json.dumps(cache.report(tiny["Sneaker"])))


def test_cli_bad_class_names_the_fix(capsys, tiny):
    from engine import cli
    from tests.test_concepts_fixtures import CLI_ARGS

    assert cli.main(["report", "concepts", *CLI_ARGS, "--class", "Spaceship", "--json"]) == 2
    assert "not a class of fmnist-cnn" in capsys.readouterr().err


@pytest.mark.heavy
def test_full_training_reaches_88_percent(cache_root):
    from engine.concepts import fmnist

    _, metrics = fmnist.load_or_train(fmnist.FmnistTrainConfig())
    assert metrics["test_accuracy"] >= 0.88
