"""Plotly figures of the modality-gap page: the joint map and the gap-direction histogram.

Every drawn marker carries ``customdata`` = its row in the page's point table, so clicks map
back to items. Beyond ``max_points`` points the map draws every point as a density image
(datashader: counts per pixel, log-shaded) under a seeded WebGL sample, and ``MapInfo`` says how
many were drawn; box and lasso selections are then resolved on the server over all points
(``engine.gap.layout.select_box`` / ``select_lasso``), not from the drawn markers.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import plotly.graph_objects as go

MAX_POINTS = 200_000
"""markers drawn one by one up to this many points"""
SAMPLE = 50_000
"""markers drawn over the density layer beyond MAX_POINTS"""
DENSITY_PX = 700
"""width and height of the density image, in pixels"""
MAX_SEGMENTS = 20_000
"""pair segments drawn at most (a seeded sample beyond)"""
MAX_CATEGORIES = 24
"""beyond this many values a factor is drawn as one trace with a colour scale"""
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd",
           "#e6550d", "#31a354", "#756bb1", "#636363", "#9c9ede", "#e7969c", "#b5cf6b", "#e7ba52"]
MODALITY_COLOURS = {"image": "#1f77b4", "text": "#d62728"}
SYMBOLS = {"image": "circle", "text": "diamond"}


@dataclasses.dataclass(frozen=True)
class MapInfo:
    n_points: int
    """points in the map"""
    n_drawn: int
    """markers drawn"""
    density: bool
    """True when a density layer stands for all points"""
    n_segments: int
    """pair segments drawn"""
    n_pairs: int
    """pairs in the map"""


def drawn_rows(n: int, max_points: int = MAX_POINTS, sample: int = SAMPLE, seed: int = 0) -> np.ndarray:
    """Rows drawn as markers: all of them, or a seeded sample when there are more than ``max_points``."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=min(sample, max_points), replace=False))


def _hover(table: pd.DataFrame, rows: np.ndarray) -> list[str]:
    sub = table.iloc[rows]
    txt = sub["text"].fillna("").astype(str).str.slice(0, 80)
    return [f"#{i} {m} (pair {p})<br>{t}" for i, m, p, t in zip(sub["id"], sub["modality"], sub["pair_id"], txt)]


def extent(xy: np.ndarray, pad: float = 0.02) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x0, x1), (y0, y1)): the points' bounding box grown by ``pad`` of its size on each side."""
    lo, hi = np.nanmin(xy, axis=0).astype(np.float64), np.nanmax(xy, axis=0).astype(np.float64)
    span = np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def density_counts(xy: np.ndarray, px: int = DENSITY_PX, ranges=None):
    """Points per pixel of a ``px`` × ``px`` grid over ``ranges`` (default ``extent(xy)``).

    Returns (counts (px, px) with row 0 at the bottom y, x range, y range); datashader's
    ``Canvas.points`` does the binning (numba), so 2M points take about 0.1 s.
    """
    import datashader as ds

    xr, yr = ranges or extent(xy)
    df = pd.DataFrame({"x": np.asarray(xy[:, 0], dtype=np.float32), "y": np.asarray(xy[:, 1], dtype=np.float32)})
    agg = ds.Canvas(plot_width=px, plot_height=px, x_range=xr, y_range=yr).points(df, "x", "y", agg=ds.count())
    return agg, xr, yr


def _density(xy: np.ndarray, px: int = DENSITY_PX) -> tuple[dict, tuple, tuple]:
    """A plotly layout image (in data coordinates) of every point, log-shaded greys."""
    import datashader.transfer_functions as tf

    agg, xr, yr = density_counts(xy, px)
    img = tf.shade(agg, cmap=["#d9d9d9", "#111111"], how="log", min_alpha=60).to_pil()
    return dict(source=img, xref="x", yref="y", x=xr[0], y=yr[1], sizex=xr[1] - xr[0], sizey=yr[1] - yr[0],
                sizing="stretch", layer="below", opacity=0.9, name="density (all points)"), xr, yr


def _segments(xy: np.ndarray, table: pd.DataFrame, max_segments: int, seed: int) -> tuple[go.Scattergl | None, int]:
    n = len(table) // 2  # rows 0..n-1 images, n..2n-1 their captions
    pairs = np.arange(n) if n <= max_segments else np.sort(
        np.random.default_rng(seed).choice(n, size=max_segments, replace=False))
    if not len(pairs):
        return None, 0
    seg = np.full((len(pairs) * 3, 2), np.nan, dtype=np.float32)
    seg[0::3], seg[1::3] = xy[pairs], xy[pairs + n]
    return go.Scattergl(x=seg[:, 0], y=seg[:, 1], mode="lines", line=dict(width=0.5, color="rgba(90,90,90,0.35)"),
                        hoverinfo="skip", name="true pairs", showlegend=True), len(pairs)


def joint_map(xy: np.ndarray, table: pd.DataFrame, colour: str = "modality", segments: bool = False,
              highlight: list[int] | None = None, max_points: int = MAX_POINTS, sample: int = SAMPLE,
              max_segments: int = MAX_SEGMENTS, seed: int = 0) -> tuple[go.Figure, MapInfo]:
    """WebGL scatter of the joint map. xy (N, 2) rows match ``table`` (images first, then captions).

    ``colour`` is 'modality' or a column of ``table``; modality is also shown by marker symbol.
    ``highlight`` rows get a ring (the clicked item and its partner).
    """
    if colour not in table.columns:
        raise ValueError(f"cannot colour by {colour!r}; choose one of {list(table.columns)}")
    rows = drawn_rows(len(table), max_points, sample, seed)
    density = len(rows) < len(table)
    fig = go.Figure()
    if density:
        image, xr, yr = _density(xy)
        fig.add_layout_image(image)
        fig.update_xaxes(range=list(xr))
        fig.update_yaxes(range=list(yr))
    n_seg = 0
    if segments:
        trace, n_seg = _segments(xy, table, max_segments, seed)
        if trace is not None:
            fig.add_trace(trace)
    # only the drawn rows are turned into values, symbols and hover text (2M rows would take seconds)
    values = table[colour].iloc[rows].fillna("(none)").astype(str).to_numpy()
    symbols = np.where(table["modality"].iloc[rows].to_numpy() == "text", SYMBOLS["text"], SYMBOLS["image"])
    cats = sorted(set(values))
    size = 5 if len(rows) < 20_000 else 3
    if len(cats) <= MAX_CATEGORIES:
        for k, cat in enumerate(cats):
            sel = values == cat
            r = rows[sel]
            c = MODALITY_COLOURS.get(cat, PALETTE[k % len(PALETTE)]) if colour == "modality" else PALETTE[k % len(PALETTE)]
            fig.add_trace(go.Scattergl(x=xy[r, 0], y=xy[r, 1], mode="markers", name=cat, customdata=r,
                                       text=_hover(table, r), hovertemplate="%{text}<extra></extra>",
                                       marker=dict(size=size, color=c, symbol=symbols[sel], opacity=0.75)))
    else:
        codes = pd.Categorical(values).codes
        fig.add_trace(go.Scattergl(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=colour, customdata=rows,
                                   text=[f"{h}<br>{colour}: {v}" for h, v in zip(_hover(table, rows), values)],
                                   hovertemplate="%{text}<extra></extra>",
                                   marker=dict(size=size, color=codes, colorscale="Turbo", symbol=symbols,
                                               opacity=0.75, colorbar=dict(title=colour))))
    if highlight:
        h = np.asarray(highlight)
        fig.add_trace(go.Scattergl(x=xy[h, 0], y=xy[h, 1], mode="markers", name="selected item & partner",
                                   hoverinfo="skip", marker=dict(size=16, color="rgba(0,0,0,0)",
                                                                 line=dict(width=2.5, color="black"))))
    fig.update_layout(height=620, margin=dict(l=10, r=10, t=30, b=10), dragmode="select",
                      legend=dict(itemsizing="constant", title=colour, orientation="h", y=-0.08), uirevision=colour)
    return fig, MapInfo(len(table), len(rows), density, n_seg, len(table) // 2)


def with_highlight(fig: go.Figure, xy: np.ndarray, rows: list[int]) -> go.Figure:
    """A copy of ``fig`` (left untouched, so it can be cached) with rings on ``rows`` (the clicked
    item and its partner). The copy shares the big traces' arrays: only the figure shell is new."""
    out = go.Figure(layout=fig.layout)
    out.add_traces(list(fig.data))
    h = np.asarray(rows)
    out.add_trace(go.Scattergl(x=xy[h, 0], y=xy[h, 1], mode="markers", name="selected item & partner",
                               hoverinfo="skip", marker=dict(size=16, color="rgba(0,0,0,0)",
                                                             line=dict(width=2.5, color="black"))))
    return out


def gap_histogram(proj_img: np.ndarray, proj_txt: np.ndarray, bins: int = 80) -> go.Figure:
    """Overlaid histograms of the gap-direction coordinate ⟨x, Δ/‖Δ‖⟩ per modality."""
    proj_img, proj_txt = np.asarray(proj_img), np.asarray(proj_txt)
    lo = float(min(proj_img.min(), proj_txt.min()))
    hi = float(max(proj_img.max(), proj_txt.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    fig = go.Figure()
    for name, v in (("image", proj_img), ("text", proj_txt)):
        counts, _ = np.histogram(v, bins=edges)  # binned here: the browser gets bins, not points
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, name=name, opacity=0.6,
                             marker_color=MODALITY_COLOURS[name], width=edges[1] - edges[0]))
    fig.update_layout(barmode="overlay", height=300, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title="projection on the gap direction Δ/‖Δ‖", yaxis_title="points")
    return fig
