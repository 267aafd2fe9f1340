"""Datasets -> model -> DuckDB cache: local weights, bad images, resumption, export, CLI."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from engine import cli
from engine.datasets.sources import resolve
from engine.embcache import EmbCache, list_caches, open_cache
from engine.encoders import Encoder, ModelSpec
from engine.precompute import cache_path, precompute


def test_local_weights_load_through_cli_path_identically(cache_root, tiny_weights, capsys):
    st_path, bin_path, model = tiny_weights
    src = resolve("shapes", n=40, seed=3)
    pix = torch.stack([Encoder(ModelSpec("geolens-tiny", str(st_path))).preprocess(src[i].image) for i in range(40)])
    caps = [src[i].caption for i in range(40)]
    with torch.no_grad():
        ref_img = torch.nn.functional.normalize(model.encode_image(pix), dim=-1).numpy()
        ref_txt = torch.nn.functional.normalize(model.encode_text(model_tok(caps)), dim=-1).numpy()
    for path in (st_path, bin_path):
        assert cli.main(["precompute", "--dataset", "shapes", "--n", "40", "--seed", "3", "--model", "geolens-tiny",
                         "--pretrained", str(path), "--batch-size", "16"]) == 0
        cache = EmbCache(cache_path(src, Encoder(ModelSpec("geolens-tiny", str(path)))))
        img, txt, pid = cache.pairs()
        np.testing.assert_allclose(img, ref_img, atol=1e-5)
        np.testing.assert_allclose(txt, ref_txt, atol=1e-5)
        assert list(pid) == list(range(40))
        assert cache.manifest["model"]["weights_hash"] != "random-init"


def model_tok(caps):
    import open_clip
    return open_clip.get_tokenizer("geolens-tiny")(caps)


def test_missing_weights_and_bad_args_name_the_fix(cache_root, capsys):
    assert cli.main(["precompute", "--model", "geolens-tiny", "--pretrained", "/nope/w.safetensors"]) == 2
    assert "pass an existing" in capsys.readouterr().err
    assert cli.main(["precompute", "--model", "ViT-B-32", "--pretrained", "not-a-tag"]) == 2
    assert "known tags" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown open_clip model"):
        ModelSpec("no-such-arch")


def test_bad_images_are_skipped_counted_and_listed(cache_root, tmp_path, tiny_weights):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30), (i * 60, 10, 10)).save(imgs / f"ok{i}.png")
    good = (imgs / "ok0.png").read_bytes()
    (imgs / "truncated.png").write_bytes(good[: len(good) // 2])
    (imgs / "garbage.jpg").write_bytes(b"not an image at all")
    rows = [("imgs/ok0.png", "a dark square"), ("imgs/truncated.png", "half a file"), ("imgs/ok1.png", "a red square"),
            ("imgs/garbage.jpg", "noise"), ("imgs/missing.png", "nothing"), ("imgs/ok2.png", "a bright square")]
    csv = tmp_path / "caps.csv"
    pd.DataFrame(rows, columns=["image", "caption"]).to_csv(csv, index=False)
    enc = Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])))
    res = precompute(resolve(str(csv)), enc, batch_size=4)
    assert (res.n_pairs, res.n_skipped) == (3, 3)
    sk = res.cache.skipped()
    assert sorted(p.rsplit("/", 1)[-1] for p in sk["path"]) == ["garbage.jpg", "missing.png", "truncated.png"]
    assert any(r.startswith("missing") for r in sk["reason"])
    items = res.cache.items()
    assert sorted(items.loc[items.modality == "text", "text"]) == ["a bright square", "a dark square", "a red square"]
    assert len(res.cache.thumbnails(items.loc[items.modality == "image", "id"])) == 3
    # JSONL and COCO go through the same loader
    jl = tmp_path / "caps.jsonl"
    jl.write_text("\n".join(json.dumps({"file_name": f"ok{i}.png", "text": f"c{i}"}) for i in range(3)))
    assert precompute(resolve(str(jl), images=str(imgs)), enc).n_pairs == 3
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "ok0.png"}, {"id": 2, "file_name": "ok1.png"}],
                                "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"},
                                                {"image_id": 2, "caption": "z"}]}))
    assert precompute(resolve(str(coco), images=str(imgs)), enc).n_pairs == 3


def test_interrupted_precompute_resumes_without_redoing_batches(cache_root, tiny_weights):
    enc = Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])))
    src = resolve("shapes", n=50, seed=11)
    path = cache_path(src, enc)
    with pytest.raises(KeyboardInterrupt):
        precompute(src, enc, batch_size=10, stop_after=2)
    assert not path.exists()  # readers never see a half-written cache
    assert all(c.path != path for c in list_caches())
    res = precompute(src, enc, batch_size=10)
    assert res.resumed_batches == 2 and res.n_pairs == 50
    img, txt, pid = res.cache.pairs()
    ref = precompute(resolve("shapes", n=50, seed=11), enc, batch_size=50, force=True)
    img2, txt2, _ = ref.cache.pairs()
    np.testing.assert_allclose(img, img2, atol=1e-5)
    assert list(pid) == list(range(50))
    f = res.cache.factors()
    assert len(f) == 50 and set(res.cache.factor_kinds().values()) == {"shared", "image", "text"}


def test_caches_listing_and_export(cache_root, tiny_weights, tmp_path, capsys):
    enc = Encoder(ModelSpec("geolens-tiny", str(tiny_weights[0])))
    cache = precompute(resolve("shapes", n=20, seed=5), enc).cache
    assert open_cache(cache.name[:30]).name == cache.name or len([c for c in list_caches() if c.name.startswith(cache.name[:30])]) > 1
    assert cli.main(["caches", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert cache.name in [r["name"] for r in listed]
    out = tmp_path / "e.parquet"
    assert cli.main(["export", "--cache", cache.name, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 40 and set(df.modality) == {"image", "text"}
    emb = np.stack(df.embedding.to_numpy())
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert cli.main(["caches"]) == 0 and "pairs" in capsys.readouterr().out
