"""The trained one-shot families' objectives on tiny data: VAE-NS ELBO, DDPM noising / loss / guidance,
GAN losses; the shared trainer's resume and asset paths; the generator registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.dvr import ddpm, gan, generators, trainer, vae


def _tiny_data(n_classes: int = 6, per_class: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n_classes * per_class, 50, 50)) > 0.8).astype(np.float32)
    return x, np.repeat(np.arange(n_classes), per_class)


# ---------------------------------------------------------------- VAE-NS
def test_neg_elbo_matches_hand_computation_on_2x2():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)  # K = 2 targets of one class
    l3 = math.log(3)
    logits = torch.tensor([[l3, l3], [0.0, 0.0]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    q_z = (torch.ones(2, 1), torch.zeros(2, 1))  # N(1, 1)
    p_z = (torch.zeros(2, 1), torch.full((2, 1), math.log(4)))  # N(0, 4)
    q_c = (torch.full((1, 1), 0.5), torch.zeros(1, 1))  # N(0.5, 1) against p(c) = N(0, 1)
    # BCE: −log σ(ln3) = log(4/3); −log(1 − σ(ln3)) = log 4; two pixels at logit 0: log 2 each
    rec = math.log(4 / 3) + math.log(4) + 2 * math.log(2)
    kl_z = 0.5 * (math.log(4) - 0 + (1 + 1) / 4 - 1)
    kl_c = 0.5 * (0 - 0 + (1 + 0.25) - 1)
    out = vae.neg_elbo(x, logits, q_z, p_z, q_c, k=2, beta=2.0)
    torch.testing.assert_close(out, torch.full((2,), rec + 2.0 * (kl_z + kl_c / 2)), rtol=1e-6, atol=1e-6)


def test_ns_samples_depend_on_exemplar_only_through_context():
    cfg = vae.VAEConfig(channels=4, hidden=16, c_dim=3, z_dim=2)
    net = vae.NeuralStatistician(cfg).eval()
    c = torch.randn(1, 3)
    net.context = lambda d: (c.expand(len(d), 3), torch.zeros(len(d), 3))  # same statistic for any image
    a = net.sample(torch.zeros(2, 1, 32, 32), 3, torch.Generator().manual_seed(0))
    b = net.sample(torch.rand(2, 1, 32, 32), 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 3, 32, 32) and set(a.unique().tolist()) <= {0.0, 1.0}  # Bernoulli pixels
    means = net.sample(torch.zeros(2, 1, 32, 32), 3, torch.Generator().manual_seed(0), bernoulli=0.0)
    assert 0 < means.min() and means.max() < 1
    assert "exemplar" not in vae.NeuralStatistician.decode.__code__.co_varnames


# ---------------------------------------------------------------- DDPM
def test_alpha_bar_is_the_product_of_one_minus_beta():
    b = ddpm.betas(200)
    assert b[0].item() == pytest.approx(1e-4 * 5) and b[-1].item() == pytest.approx(0.1)
    ab, prod = ddpm.alpha_bar(200), 1.0
    for t in range(200):
        prod *= 1 - b[t].item()
        assert ab[t].item() == pytest.approx(prod, rel=1e-12)


def test_q_sample_matches_iterating_the_forward_chain():
    """x_t from the closed form has the mean and variance of t+1 steps of x ← √(1−β)x + √β ε."""
    T, t, x0, n = 50, 30, 0.7, 200_000
    g = torch.Generator().manual_seed(0)
    b = ddpm.betas(T)
    x = torch.full((n,), x0, dtype=torch.float64)
    for s in range(t + 1):
        x = (1 - b[s]).sqrt() * x + b[s].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    closed = ddpm.q_sample(torch.full((n,), x0, dtype=torch.float64), torch.full((n,), t),
                           torch.randn(n, generator=g, dtype=torch.float64), ddpm.alpha_bar(T))
    ab = ddpm.alpha_bar(T)[t].item()
    assert closed.mean().item() == pytest.approx(math.sqrt(ab) * x0, abs=0.01)
    assert closed.var().item() == pytest.approx(1 - ab, abs=0.01)
    assert x.mean().item() == pytest.approx(closed.mean().item(), abs=0.01)
    assert x.var().item() == pytest.approx(closed.var().item(), abs=0.01)


def test_denoising_loss_is_zero_for_the_true_noise_and_ddim_inverts_it():
    g = torch.Generator().manual_seed(1)
    ab = ddpm.alpha_bar(200)
    x0 = torch.rand(8, 1, 4, 4, generator=g) * 2 - 1
    t = torch.randint(200, (8,), generator=g)
    eps = torch.randn(8, 1, 4, 4, generator=g)
    xt = ddpm.q_sample(x0, t, eps, ab)
    a = ab[t].float().view(-1, 1, 1, 1)
    oracle = (xt - a.sqrt() * x0) / (1 - a).sqrt()  # what a perfect ε_θ would predict
    assert ddpm.denoising_loss(oracle, eps).item() < 1e-10
    assert ddpm.denoising_loss(torch.zeros_like(eps), eps).item() == pytest.approx(eps.pow(2).mean().item())
    i = 0
    back = ddpm.ddim_step(xt[i], eps[i], ab[t[i]].item(), 1.0)  # to ᾱ = 1: the clean image
    torch.testing.assert_close(back, x0[i], atol=1e-4, rtol=0)


def test_cfg_combination():
    ec, eu = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(ddpm.cfg_eps(ec, eu, 2.0), torch.tensor([3 * 1 - 2 * 0.5, 3 * 2 + 2 * 1.0]))
    torch.testing.assert_close(ddpm.cfg_eps(ec, eu, 0.0), ec)


def test_guided_sampling_uses_the_null_context_only_when_guided():
    torch.manual_seed(0)
    net = ddpm.GuidedDDPM(ddpm.DDPMConfig(channels=8, emb=16, timesteps=20, sample_steps=4)).eval()
    ex = torch.rand(2, 1, 32, 32)
    s0 = net.sample(ex, 2, torch.Generator().manual_seed(0), w=0.0)
    with torch.no_grad():
        net.null.add_(5.0)  # changes ε(x, t, ∅) only
    torch.testing.assert_close(net.sample(ex, 2, torch.Generator().manual_seed(0), w=0.0), s0)
    assert not torch.allclose(net.sample(ex, 2, torch.Generator().manual_seed(0), w=2.0), s0)
    assert s0.shape == (2, 2, 32, 32) and 0 <= s0.min() and s0.max() <= 1


def test_spatial_ddpm_reads_the_exemplar_image_and_drops_it_with_the_context():
    torch.manual_seed(0)
    x, t, ctx = torch.randn(2, 1, 32, 32), torch.tensor([5, 10]), torch.zeros(2, 16)
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    for spatial in (True, False):
        net = ddpm.GuidedDDPM(ddpm.DDPMConfig(channels=8, emb=16, timesteps=20, sample_steps=4, spatial=spatial)).eval()
        with torch.no_grad():
            assert (not torch.allclose(net.eps(x, t, ctx, a), net.eps(x, t, ctx, b))) == spatial

    # training: a row whose context is dropped (the null embedding) also gets the all-zero image
    net = ddpm.GuidedDDPM(ddpm.DDPMConfig(channels=8, emb=16, timesteps=20, p_uncond=0.5))
    seen = {}
    real_eps = net.eps

    def spy(x, t, ctx, image=None):
        seen["ctx"], seen["image"] = ctx.detach(), image.detach()
        return real_eps(x, t, ctx, image)

    net.eps = spy
    ex, tg = torch.rand(8, 1, 32, 32), torch.rand(8, 2, 1, 32, 32)
    null = net.null.detach().clone()  # before the step moves it
    net.train_step(ex, tg, net.optimizers(), torch.Generator().manual_seed(1))
    dropped = (seen["ctx"] == null).all(1)
    assert 0 < int(dropped.sum()) < 16
    assert (seen["image"][dropped] == 0).all()
    torch.testing.assert_close(seen["image"][~dropped], (ex * 2 - 1).repeat_interleave(2, 0)[~dropped])


# ---------------------------------------------------------------- GAN
def test_gan_losses_on_hand_values():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    assert gan.d_loss(real, fake).item() == pytest.approx(math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    assert gan.g_loss(torch.tensor([0.0, 0.0])).item() == pytest.approx(math.log(2))
    ms = gan.mode_seeking(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), torch.zeros(2), torch.full((2,), 2.0))
    assert ms.item() == pytest.approx(0.5 / 2.0)


def test_discriminator_judges_pairs():
    torch.manual_seed(0)
    d = gan.Discriminator(8).eval()
    x = torch.rand(3, 1, 32, 32)
    assert d(torch.zeros(3, 1, 32, 32), x).shape == (3,)
    assert not torch.allclose(d(torch.zeros(3, 1, 32, 32), x), d(torch.ones(3, 1, 32, 32), x))  # sees the exemplar


# ---------------------------------------------------------------- trainer, store, assets
def test_to_eval_upsamples_and_thresholds_at_half():
    p = torch.full((2, 3, 32, 32), 0.4)
    p[0, 0] = 0.6
    out = trainer.to_eval(p)
    assert out.shape == (2, 3, 50, 50) and out[0, 0].min() == 1 and out[0, 1].max() == 0


@pytest.mark.parametrize("model_cls, cfg", [
    (vae.NeuralStatistician, vae.VAEConfig(steps=4, channels=4, hidden=16, batch_classes=2, checkpoint_every=1)),
    (gan.DAGAN, gan.GANConfig(steps=4, channels=8, batch_classes=2, checkpoint_every=1)),
    (ddpm.GuidedDDPM, ddpm.DDPMConfig(steps=4, channels=8, emb=16, batch_classes=2, checkpoint_every=1)),
])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, model_cls, cfg):
    x, y = _tiny_data()
    torch.manual_seed(0)
    whole = model_cls(cfg)
    trainer.train(whole, x, y, tmp_path / "a")
    torch.manual_seed(0)
    part = model_cls(cfg)
    log = trainer.train(part, x, y, tmp_path / "b", stop_after=2)
    assert not log["done"]
    torch.manual_seed(123)  # a new process: other global RNG state, fresh weights
    resumed = model_cls(cfg)
    log = trainer.train(resumed, x, y, tmp_path / "b")
    assert log["resumed_at"] == 2 and log["done"]
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_model_store_and_shipped_asset(cache_root, tmp_path, monkeypatch):
    from engine.core import assets

    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path / "assets"))
    x, y = _tiny_data()
    gen = generators.make("vae_ns", beta=2, steps=2, channels=4, hidden=16, batch_classes=2)
    assert gen.label() == "vae_ns-batch_classes2-beta2-channels4-hidden16-steps2"
    with pytest.raises(FileNotFoundError, match="dvr-train vae_ns"):
        gen.fit(x, y, torch.device("cpu"), data_key="tiny-data", train_missing=False)
    gen.fit(x, y, torch.device("cpu"), data_key="tiny-data")
    art = gen.artifact_
    assert (art.path / trainer.WEIGHTS).exists() and not (art.path / trainer.CHECKPOINT).exists()
    assert set(art.meta["ink"]) == {"sample_ink", "data_ink", "blank_fraction"} and art.meta["train_seconds"] > 0
    rec = trainer.publish(art, "geolens dvr-train vae_ns --set beta=2")
    assert rec["config_key"] == art.key
    import shutil

    shutil.rmtree(art.path)  # a fresh machine: no trained model, only the shipped asset
    again = generators.make("vae_ns", beta=2.0, steps=2, channels=4, hidden=16, batch_classes=2)
    again.fit(x, y, torch.device("cpu"), data_key="tiny-data", train_missing=False)
    assert again.artifact_.meta["from_asset"].startswith("dvr-vae_ns-")
    ex = x[:2]
    np.testing.assert_array_equal(gen.sample(ex, 3, 5, None), again.sample(ex, 3, 5, None))
    out = gen.sample(ex, 3, 5, None)
    assert out.shape == (2, 3, 50, 50) and set(np.unique(out)) <= {0.0, 1.0}


# ---------------------------------------------------------------- registry
def test_registry_drives_cli_choices_and_specs():
    import argparse

    from engine.dvr import cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub, argparse.ArgumentParser().add_subparsers())
    assert set(generators.trained_names()) == {"vae_ns", "dagan", "ddpm_cfg"}
    with pytest.raises(SystemExit):
        parser.parse_args(["dvr-train", "not_a_model"])
    assert parser.parse_args(["dvr-train", "ddpm_cfg", "dagan"]).names == ["ddpm_cfg", "dagan"]
    with pytest.raises(ValueError, match="choose one of"):
        generators.make("vae")
    with pytest.raises(ValueError, match="unknown parameters"):
        generators.make("ddpm_cfg", beta=1.0)
    specs = generators.default_specs()
    for s in specs:
        assert s.sweep in ("", generators.GENERATORS.get(s.generator).sweep)
    fams = {generators.GENERATORS.get(s.generator).family for s in specs}
    assert {"vae", "gan", "diffusion"} <= fams
    assert cli._settings(["beta=0.5,1", "steps=10"]) == [{"beta": 0.5, "steps": 10}, {"beta": 1, "steps": 10}]


def test_family_map_checks_on_hand_points():
    import pandas as pd

    from engine.dvr import results

    human = {"diversity": 0.4, "recognizability": 0.9}
    rows = [("vae", 0.6, 0.5, 0.7), ("vae", 0.8, 0.4, 0.9), ("gan", 0.1, 0.98, 0.75), ("diffusion", 0.35, 0.85, 0.1),
            ("gan", 0.9, 0.1, 0.01)]  # the last one is a user's run: ignored
    s = pd.DataFrame([{"family": f, "diversity": d, "recognizability": r, "distance_to_human": h,
                       "run": results.BUILT_IN if i < 4 else "mine"} for i, (f, d, r, h) in enumerate(rows)])
    m = results.family_map(s, human)
    assert m["families"]["vae"]["diversity"] == pytest.approx(0.7) and m["families"]["gan"]["n_configs"] == 1
    assert m["checks"] == {"gan_below_vae": True, "vae_off_human": True, "diffusion_closest": True}
    m = results.family_map(s[s["family"] != "diffusion"], human)
    assert m["checks"]["diffusion_closest"] is None


def test_shipped_critics_install_by_key_and_retrain_ignores_them(cache_root, tmp_path, monkeypatch):
    import json
    import shutil

    from engine.core import assets
    from engine.dvr import networks

    monkeypatch.setenv(assets.ENV_ASSETS, str(tmp_path / "assets"))
    x, y = _tiny_data()
    x = x[:, ::2, ::2][:, :25, :25].repeat(4, 1).repeat(4, 2)[:, :50, :50]  # any 50×50 drawings
    cfg = networks.CriticConfig(widths=(4, 4, 8, 8), feature_dim=8, simclr_epochs=1, simclr_batch=16,
                                proto_episodes=2, proto_way=3)
    trained = networks.get_critics(x, y, "tiny-strokes", cfg, "cpu")
    folder = trained.folder
    for name in ("simclr", "protonet"):
        meta = json.loads((folder / f"{name}.json").read_text())
        assets.publish(networks.critic_asset(name), {f"{name}.safetensors": folder / f"{name}.safetensors"},
                       config=cfg.to_dict(), config_key=f"{folder.name}/{name}", command="geolens x", seed=0,
                       train_seconds=1.0, metrics={}, meta=meta)
    shutil.rmtree(folder)  # a fresh machine: only the shipped critics
    shipped = networks.get_critics(x, y, "tiny-strokes", cfg, "cpu", train=False)
    for a, b in ((trained.simclr, shipped.simclr), (trained.protonet, shipped.protonet)):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, msg=k)
    assert json.loads((folder / "protonet.json").read_text())["from_asset"] == "protonet.safetensors"
    with pytest.raises(FileNotFoundError, match="not trained"):  # other data: the assets do not apply
        networks.get_critics(x, y, "other-strokes", cfg, "cpu", train=False)
    shutil.rmtree(folder)
    monkeypatch.setenv("GEOLENS_RETRAIN", "1")
    with pytest.raises(FileNotFoundError, match="not trained"):
        networks.get_critics(x, y, "tiny-strokes", cfg, "cpu", train=False)
    assert not (folder / "simclr.json").exists()  # nothing half-installed is left
