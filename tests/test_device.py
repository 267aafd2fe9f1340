"""Device choice and seeding."""
import numpy as np
import pytest
import torch

from engine import device


def test_pick_device_auto_and_override(monkeypatch):
    monkeypatch.delenv(device.ENV_DEVICE, raising=False)
    auto = device.pick_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert device.pick_device("cpu").type == "cpu"
    monkeypatch.setenv(device.ENV_DEVICE, "cpu")
    assert device.pick_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="--device cpu"):
            device.pick_device("cuda")


def test_seed_everything_is_deterministic():
    device.seed_everything(3)
    a = (np.random.rand(3), torch.rand(3))
    device.seed_everything(3)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_loader_kwargs_pin_memory_only_on_cuda():
    assert device.loader_kwargs(torch.device("cpu")) == {"num_workers": 0, "pin_memory": False}
    kw = device.loader_kwargs(torch.device("cuda"))
    assert kw["pin_memory"] and kw["num_workers"] >= 1

