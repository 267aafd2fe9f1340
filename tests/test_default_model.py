"""The default model's recipes: fixed vs learned temperature, checkpoint/resume, gap measures."""
import json
import math

import numpy as np
import pytest
from safetensors.torch import load_file

from engine.default_model import (RECIPES, TrainConfig, asset_name, checkpoint_dir, gap_measures, recipe, train,
                                  weights_path)

TINY = dict(n_train=48, batch_size=16, n_eval=24, warmup=1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEOLENS_ASSETS", str(tmp_path / "assets"))
    return tmp_path


def _scale(path) -> float:
    return float(load_file(str(path))["logit_scale"].exp())


def test_recipes_and_their_keys():
    gap, old = RECIPES.get("gap"), RECIPES.get("learnable-temp")
    assert gap.temperature == 0.005 and old.temperature is None
    assert {k for k in gap.to_dict() if gap.to_dict()[k] != old.to_dict()[k]} == {"temperature", "steps"}
    assert old.steps == 1500 and gap == TrainConfig()  # the old recipe as it was; the default is "gap"
    assert gap.key() != old.key()  # the temperature is part of the key
    assert asset_name(gap) == "geolens-tiny" and asset_name(old) == "geolens-tiny-learnable-temp"
    assert recipe("gap", steps=7).steps == 7 and recipe("gap", steps=7).temperature == 0.005
    with pytest.raises(ValueError, match="choose one of"):
        recipe("nope")
    with pytest.raises(ValueError, match="temperature must be in"):
        TrainConfig(temperature=0.0)


def test_key_covers_the_architecture_config(monkeypatch):
    import copy

    import open_clip

    cfg, real = TrainConfig(), open_clip.get_model_config

    def wider(name):
        c = copy.deepcopy(real(name))
        c["vision_cfg"]["width"] += 8
        return c

    before = cfg.key()
    monkeypatch.setattr(open_clip, "get_model_config", wider)
    assert cfg.key() != before  # same arch name, other layers: other weights, other key


def test_fixed_temperature_stays_at_one_two_hundredth(cache):
    path = train(recipe("gap", steps=3, **TINY), checkpoint_every=3)
    assert _scale(path) == pytest.approx(200.0, rel=1e-5)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["logit_scale"] == pytest.approx(200.0, rel=1e-5)
    assert [h["logit_scale"] for h in meta["history"]] == [pytest.approx(200.0, rel=1e-4)]
    assert set(meta["geometry"]) >= {"dim", "cone_image", "cone_text", "pair_cosine", "r1_image_to_text"}
    assert set(meta["zero_shot_accuracy"]) == {"shape", "colour", "size", "position"}
    assert not checkpoint_dir(recipe("gap", steps=3, **TINY)).exists()  # removed once the weights are written


def test_learnable_temperature_is_learned(cache):
    path = train(recipe("learnable-temp", steps=3, lr=1e-2, **TINY), checkpoint_every=3)
    init = 1 / 0.07
    assert abs(_scale(path) - init) > 1e-3  # moved away from open_clip's initial 1/0.07
    assert _scale(path) <= 100.0 + 1e-4


def test_interrupted_training_resumes_to_the_same_weights(cache, capsys):
    cfg = recipe("gap", steps=4, **TINY)
    straight = {k: v.clone() for k, v in load_file(str(train(cfg, checkpoint_every=2))).items()}
    weights_path(cfg).unlink()

    class Stop(Exception):
        pass

    def stop_after_3(p):  # a ProgressFn; the tracker may skip snapshots, but always sends the last step
        if p.done >= 3:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, progress=stop_after_3, checkpoint_every=2)
    assert json.loads((checkpoint_dir(cfg) / "step.json").read_text())["step"] == 2
    lines = []
    resumed = load_file(str(train(cfg, checkpoint_every=2, log=lines.append)))
    assert lines == [f"resuming at step 2 of 4 ({checkpoint_dir(cfg)})"]
    for k, v in straight.items():
        np.testing.assert_allclose(resumed[k].numpy(), v.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_gap_measures_against_hand_computed_values():
    # two images and two captions in the plane; pair i = (img[i], txt[i])
    img = np.array([[1.0, 0.0], [0.0, 1.0]])
    txt = np.array([[0.0, 1.0], [-1.0, 0.0]])
    m = gap_measures(img, txt)
    assert m["dim"] == pytest.approx(math.hypot(0.5 - (-0.5), 0.5 - 0.5))  # means (.5,.5) and (-.5,.5)
    assert m["cone_image"] == pytest.approx(0.0) and m["cone_text"] == pytest.approx(0.0)
    assert m["pair_cosine"] == pytest.approx(0.0)  # both pairs orthogonal
    # image 0 scores txt0: 0, txt1: -1 -> its match is first; image 1 scores txt0: 1, txt1: 0 -> second
    assert m["r1_image_to_text"] == pytest.approx(0.5)
    # text 0 scores img0: 0, img1: 1 -> second; text 1 scores img0: -1, img1: 0 -> first
    assert m["r1_text_to_image"] == pytest.approx(0.5)
