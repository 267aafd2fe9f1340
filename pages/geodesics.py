"""Geodesics under metrics from energy-based models (docs/METHODS.md §3): see, compare and score shortest paths."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from engine.geodesics import pipeline, views
from engine.geodesics.data import CHARACTERS, DATASETS, TOY_DATASETS
from engine.geodesics.metrics import build_metric
from engine.geodesics.solver import solve
from engine.geodesics.spaces import build_space
from ui.state import set_url, synced_select, url_value

COLORS = ["#4285F4", "#34A853", "#EA4335", "#FBBC05", "#8E44AD", "#111111", "#7F8C8D", "#E67E22"]
LABELS = {"ucg": "UCG: uniform Gaussians on a semicircle", "wcg": "WCG: centre-weighted Gaussians",
          "urc": "URC: characters rotated uniformly", "brc": "BRC: characters rotated near 0°"}
INIT_LABELS = {"line": "the straight line (the paper's)", "graph": "the metric's shortest path through a k-NN graph of the data"}


@st.cache_data(show_spinner=False)
def report(path: str, mtime: float) -> dict:
    return pipeline.report_from_cache(Path(path))


@st.cache_resource(show_spinner="Loading the run's data and models…")
def space_of(path: str, mtime: float):
    cfg = pipeline.run_config(Path(path))
    space = build_space(cfg, train=False)
    if space.ebm is None:
        raise FileNotFoundError("this run's EBM is not in the cache; rerun `geolens geodesics precompute`")
    return cfg, space


@st.cache_resource(show_spinner="Building the metrics…")
def space_and_metrics(path: str, mtime: float):
    cfg, space = space_of(path, mtime)
    ctx = space.context(cfg)
    return cfg, space, {m: build_metric(m, ctx) for m in cfg.metrics}


@st.cache_data(show_spinner=False)
def cached_paths(path: str, mtime: float, metric: str, ids: tuple) -> np.ndarray:
    return pipeline.load_paths(Path(path), metric, list(ids))


def run_label(path: Path) -> str:
    cfg = pipeline.run_config(path)
    return f"{path.parent.name[:8]} ({cfg.n_pairs} pairs, {cfg.solver_init} start)"


def score_table(rep: dict) -> pd.DataFrame:
    rows = [{"metric": m, **{k: v for k, v in e.items()}} for m, e in rep["metrics"].items()]
    return pd.DataFrame(rows).set_index("metric")


def solve_clicked(path: str, mtime: float, names: list[str], ends: tuple) -> dict[str, np.ndarray]:
    cfg, space, metrics = space_and_metrics(path, mtime)
    x0, x1 = torch.tensor([ends[0]], dtype=torch.float32), torch.tensor([ends[1]], dtype=torch.float32)
    out = {}
    with st.status("Solving geodesics between the clicked points…", expanded=False) as status:
        bar = st.progress(0.0)
        for i, name in enumerate(names):
            t0 = time.perf_counter()
            res = solve(metrics[name], x0, x1, cfg.solver_config(), nodes=space.data)  # the run's start
            out[name] = res.paths[0].numpy()
            rate = max(int(res.iters[0]), 1) / max(time.perf_counter() - t0, 1e-6)
            bar.progress((i + 1) / len(names), text=f"{name}: {int(res.iters[0])} iterations, {rate:.0f} it/s")
        status.update(label="Geodesics solved", state="complete")
    return out


def toy_view(path: str, mtime: float, names: list[str], ids: list[int]) -> None:
    cfg, space, metrics = space_and_metrics(path, mtime)
    bg = synced_select("Background", ["density p(x)"] + [f"log10 λ: {m}" for m in names if m != "linear"], "geo_bg")
    if bg.startswith("density"):
        xs, ys, z = views.density_grid(space)
    else:
        xs, ys, z = views.metric_grid(metrics[bg.split(": ", 1)[1]])
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=z, colorscale="Blues", showscale=True, hoverinfo="skip"))
    gx, gy = np.meshgrid(xs[::4], ys[::4])
    fig.add_trace(go.Scatter(x=gx.ravel(), y=gy.ravel(), mode="markers", marker=dict(size=9, opacity=0.0),
                             name="click targets", showlegend=False, hovertemplate="(%{x:.1f}, %{y:.1f})<extra></extra>"))
    clicked = st.session_state.setdefault("geo_clicked", [])
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        for j, p in enumerate(cached_paths(path, mtime, name, tuple(ids))):
            fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", line=dict(color=color, width=2),
                                     name=name, legendgroup=name, showlegend=j == 0))
    if len(clicked) == 2:
        live = solve_clicked(path, mtime, names, tuple(map(tuple, clicked)))
        for i, name in enumerate(names):
            p = live[name]
            fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", name=f"{name} (clicked)",
                                     line=dict(color=COLORS[i % len(COLORS)], width=4, dash="dot")))
    if clicked:
        c = np.array(clicked)
        fig.add_trace(go.Scatter(x=c[:, 0], y=c[:, 1], mode="markers", marker=dict(size=12, color="red"),
                                 name="clicked endpoints"))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(scaleanchor="x"),
                      legend=dict(orientation="h"))
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="geo_map", width="stretch")
    pts = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else getattr(getattr(event, "selection", None), "points", [])
    if pts:
        xy = [float(pts[-1]["x"]), float(pts[-1]["y"])]
        if not clicked or clicked[-1] != xy:
            st.session_state["geo_clicked"] = (clicked + [xy])[-2:] if len(clicked) < 2 else [xy]
            st.rerun()
    c1, c2 = st.columns([3, 1])
    c1.caption("Click two points on the map to solve geodesics between them for every chosen metric; "
               "the thin lines are cached benchmark geodesics.")
    if c2.button("Clear clicked endpoints"):
        st.session_state["geo_clicked"] = []
        st.rerun()


def chars_view(path: str, mtime: float, names: list[str], ids: list[int]) -> None:
    cfg, space = space_of(path, mtime)
    pairs = pipeline.load_pairs(Path(path)).set_index("pair_id")
    frames = st.slider("Frames per strip", 5, 16, 10, key="geo_frames")
    for pid in ids:
        row = pairs.loc[pid]
        st.markdown(f"**Pair {pid}**: “{CHARACTERS[int(row.label)]}” rotated {row.a0:.0f}° → {row.a1:.0f}°")
        strips = [views.true_strip(int(row.label), float(row.a0), float(row.a1), frames)]
        captions = ["true rotation"]
        for name in names:
            strips.append(views.strip(space, cached_paths(path, mtime, name, (pid,))[0], frames))
            captions.append(name)
        for cap, img in zip(captions, strips):
            c1, c2 = st.columns([1, 6])
            c1.write(cap)
            c2.image(np.kron(img, np.ones((2, 2))), clamp=True, width="stretch")


def main() -> None:
    st.title("Geodesics from energy-based models")
    st.caption("Béthune et al. 2025, *Follow the Energy, Find the Path*: conformal metrics λ(x) from an EBM make "
               "shortest paths follow the data. Compare them with LAND, RBF and straight lines.")
    dataset = synced_select("Dataset", list(DATASETS), "geo_ds", fmt=lambda d: LABELS[d])
    runs = pipeline.list_runs(dataset)
    if not runs:
        hint = (f"Or run `geolens geodesics precompute --dataset {dataset}` (add `--small` for a quick run), then reload.")
        if dataset in ("ucg", "urc"):  # built by the default stage: its progress here, or a button that starts it
            from ui.jobs import pending_or_ready

            pending_or_ready("geodesics", False, hint=hint, recheck=lambda: bool(pipeline.list_runs(dataset)))
        else:
            st.info(f"No geodesics computed for {dataset.upper()} yet. {hint}")
        return
    labels = {p.parent.name: run_label(p) for p in runs}   # a run is named by its artifact key
    run = synced_select("Run", list(labels), "geo_run", fmt=labels.get)
    path = str(next(p for p in runs if p.parent.name == run))
    mtime = Path(path).stat().st_mtime
    rep = report(path, mtime)
    all_metrics = list(rep["metrics"])
    wanted = [m for m in (url_value("geo_metrics") or "").split(",") if m in all_metrics] or all_metrics
    names = st.multiselect("Metrics", all_metrics, default=wanted, key="geo_metric_pick")
    set_url(geo_metrics=",".join(names) or None)
    n_pairs = rep["n_pairs"]
    c1, c2 = st.columns(2)
    shown = c1.slider("Benchmark geodesics shown", 1, min(n_pairs, 30), min(5, n_pairs), key="geo_shown")
    seed = c2.number_input("Random pairs seed", 0, 10_000, 0, key="geo_seed")
    ids = sorted(np.random.default_rng(int(seed)).choice(n_pairs, size=shown, replace=False).tolist())
    st.subheader("Scores")
    higher = "p_M: higher is better" if dataset in TOY_DATASETS else "lower is better"
    st.caption(f"Mean over {n_pairs} geodesics ({higher}; RMSEs lower is better), the paper's values beside ours. "
               "Same numbers as `geolens report geodesics --json`." +
               (" Toy RMSE: G_E against the geodesic of G_E true, every other metric against that of G_1/p true."
                if dataset in TOY_DATASETS else ""))
    st.dataframe(score_table(rep), key="geo_scores")
    st.caption("EBM: " + ", ".join(f"{k} {v}" for k, v in rep["ebm"].items()) +
               f". Solver start: {INIT_LABELS[rep['solver_init']]}.")
    st.subheader("Paths")
    if not names:
        st.warning("Choose at least one metric.")
    else:
        try:
            if dataset in TOY_DATASETS:
                toy_view(path, mtime, names, ids)
            else:
                chars_view(path, mtime, names, ids[: min(3, len(ids))])
        except FileNotFoundError as exc:
            st.error(f"{exc}. Rebuild with `geolens geodesics precompute --dataset {dataset}`.")

main()
