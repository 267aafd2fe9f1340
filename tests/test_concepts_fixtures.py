"""Shared small data for the concept tests (no tests here): a quickly trained Fashion-MNIST CNN and
its concept caches for two classes, built once per cache root (later calls load from disk)."""
from __future__ import annotations

TRAIN = {"epochs": 1, "n_train": 3000}
SETTINGS = {"max_images": 60, "sobol_n": 16, "layouts": ("umap", "tsne"), "maco_steps": 6, "maco_size": 32}
CLASSES = ("Sneaker", "Trouser")
CLI_ARGS = ["--model", "fmnist-cnn", "--max-images", "60", "--sobol-n", "16", "--layouts", "umap,tsne",
            "--maco-steps", "6", "--maco-size", "32", "--epochs", "1", "--n-train", "3000"]


def tiny_classifier():
    from engine.concepts import classifiers
    from engine.concepts.fmnist import FmnistTrainConfig

    return classifiers.load("fmnist-cnn", train=FmnistTrainConfig(**TRAIN))


def tiny_caches() -> dict:
    """{class name: cache path} for CLASSES, computed in $GEOLENS_CACHE unless already there."""
    from engine.concepts import precompute
    from engine.concepts.images import fashion_mnist_test

    clf, data = tiny_classifier(), fashion_mnist_test()
    pred = precompute.predict(clf, data.images).argmax(1)
    return {c: precompute.run(precompute.ConceptConfig(class_name=c, **SETTINGS), clf, data, pred=pred)
            for c in CLASSES}
