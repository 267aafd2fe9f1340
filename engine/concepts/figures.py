"""Plotly figures of the concept page (no streamlit here): cluster graph, bars, concept map, curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

GREY = "#c8c8c8"
METHOD_LABELS = {"gradient_input": "gradient × input (% of logit)", "sobol": "Sobol total index"}


def concept_colour(i: int) -> str:
    pal = qualitative.D3 + qualitative.Dark24
    return pal[i % len(pal)]


def cluster_graph(xy: pd.DataFrame, top: np.ndarray, important: np.ndarray, names: list[str],
                  selected: int | None = None) -> go.Figure:
    """One point per image at its 2-D layout, coloured by its top concept (grey if not important).

    ``xy`` has columns row, x, y; every point carries its row in customdata for click/lasso.
    """
    fig = go.Figure()
    groups = [(f"concept {c}", concept_colour(c), top == c) for c in np.flatnonzero(important)]
    groups.append(("other concepts", GREY, ~np.isin(top, np.flatnonzero(important))))
    for label, colour, mask in groups:
        if not mask.any():
            continue
        sub = xy[mask]
        fig.add_trace(go.Scatter(
            x=sub["x"], y=sub["y"], mode="markers", name=label, customdata=sub["row"].to_numpy(),
            marker={"color": colour, "size": 7, "line": {"width": 0.5, "color": "white"}},
            text=[f"#{r} {names[r]}<br>top concept {top[r]}" for r in sub["row"]],
            hovertemplate="%{text}<extra></extra>",
        ))
    if selected is not None and 0 <= selected < len(xy):
        p = xy.iloc[selected]
        fig.add_trace(go.Scatter(x=[p["x"]], y=[p["y"]], mode="markers", name="selected", hoverinfo="skip",
                                 marker={"symbol": "circle-open", "size": 18, "color": "black", "line": {"width": 2}}))
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=30, b=10),
                      legend={"orientation": "h", "y": -0.05}, xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def importance_bars(values: np.ndarray, method: str, important: np.ndarray, title: str = "",
                    local: bool = False) -> go.Figure:
    """Bars of one importance vector (k,), important concepts in colour; ``local`` = one image's values."""
    k = len(values)
    colours = [concept_colour(i) if important[i] else GREY for i in range(k)]
    fig = go.Figure(go.Bar(x=[f"c{i}" for i in range(k)], y=values, marker_color=colours,
                           hovertemplate="concept %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), title=title or METHOD_LABELS[method],
                      yaxis_title=("logit contribution" if local else "% of logit") if method == "gradient_input" else "S_T")
    return fig


def concept_map(xy: np.ndarray, weight: np.ndarray, important: np.ndarray) -> go.Figure:
    """Concepts at their MDS position (cosine distance), size ∝ importance."""
    w = np.abs(np.asarray(weight, dtype=float))
    size = 14 + 40 * w / max(float(w.max()), 1e-9)
    colours = [concept_colour(i) if important[i] else GREY for i in range(len(xy))]
    fig = go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers+text", text=[f"c{i}" for i in range(len(xy))],
                               marker={"size": size, "color": colours, "opacity": 0.8},
                               textposition="middle center", hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=40, b=10), title="concept map (cosine)",
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def fidelity_curves(df: pd.DataFrame) -> go.Figure:
    """Deletion and insertion curves (mean class probability) for each ordering."""
    fig = go.Figure()
    dash = {"deletion": "solid", "insertion": "dot"}
    colour = {"gradient_input": "#1f77b4", "sobol": "#d62728", "random": "#7f7f7f"}
    for (ordering, kind), g in df.groupby(["ordering", "kind"]):
        fig.add_trace(go.Scatter(x=g["step"], y=g["value"], mode="lines+markers", name=f"{ordering} {kind}",
                                 line={"dash": dash[kind], "color": colour.get(ordering, "black")}))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), title="concept deletion / insertion",
                      legend={"orientation": "h", "y": -0.3},
                      xaxis_title="concepts removed / added", yaxis_title="class probability")
    return fig
