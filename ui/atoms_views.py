"""Panels of the bimodal atom browser (pages/atoms.py). UI only: numbers come from the engine."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine.atoms.views import nearest_atoms
from engine.embcache import EmbCache
from engine.sae import store as sae_store

CLASS_COLOURS = {"bimodal": "#2ca02c", "image": "#1f77b4", "text": "#d62728", "dead": "#bbbbbb"}


def open_atom(atom: int) -> None:
    st.session_state["atom"] = int(atom)
    st.query_params["atom"] = str(int(atom))


def image_grid(cache: EmbCache, ids, captions, cols: int = 6) -> None:
    """Thumbnails of image items with a caption line each."""
    thumbs = cache.thumbnails(ids)
    grid = st.columns(cols)
    for k, (i, cap) in enumerate(zip(ids, captions)):
        with grid[k % cols]:
            if int(i) in thumbs:
                st.image(thumbs[int(i)], caption=cap, width=96)


def atom_table_view(table: pd.DataFrame) -> None:
    """Filters (class, μ range, id search) and the sortable table; selecting a row opens the atom."""
    c1, c2, c3 = st.columns([2, 2, 1])
    classes = c1.multiselect("Classes", list(CLASS_COLOURS), default=["bimodal", "image", "text"], key="atom_classes")
    lo, hi = c2.slider("Modality score μ", 0.0, 1.0, (0.0, 1.0), 0.01, key="atom_mu")
    search = c3.number_input("Atom id", min_value=-1, max_value=len(table) - 1, value=-1, step=1, key="atom_search",
                             help="-1: none; otherwise opens that atom")
    if search >= 0 and st.session_state.get("atom") != search:
        open_atom(search)
    shown = table[table["class"].isin(classes) & table["mu"].fillna(-1).between(lo, hi)]
    st.caption(f"{len(shown)} of {len(table)} atoms shown")
    cols = ["atom", "class", "mu", "energy_image", "energy_text", "freq_image", "freq_text"]
    cols = [c for c in cols if c in shown.columns] + [c for c in shown.columns if c.startswith("share")]
    event = st.dataframe(shown[cols], hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key="atom_table", height=300)
    rows = event.selection.rows if event is not None else []
    if rows:
        atom = int(shown.iloc[rows[0]]["atom"])
        if st.session_state.get("atom") != atom:
            open_atom(atom)


def factor_profile(fac: pd.DataFrame, kinds: dict, ids: np.ndarray) -> pd.DataFrame:
    """For Shapes-like caches: the most common value of each factor among ``ids`` vs its base rate.

    ``fac``: one row per pair (``EmbCache.factors()``); ``kinds``: ``EmbCache.factor_kinds()``.
    """
    if len(fac.columns) <= 1 or len(ids) == 0:
        return pd.DataFrame()
    top = fac[fac["pair_id"].isin(np.asarray(ids) // 2)]
    rows = []
    for f in [c for c in fac.columns if c != "pair_id"]:
        counts = top[f].value_counts(normalize=True)
        value = counts.index[0]
        rows.append({"factor": f, "kind": kinds.get(f, "?"), "value": value, "share in top items": round(float(counts.iloc[0]), 3),
                     "base rate": round(float((fac[f] == value).mean()), 3)})
    out = pd.DataFrame(rows)
    out["lift"] = (out["share in top items"] / out["base rate"]).round(2)
    return out.sort_values("lift", ascending=False)


def atom_detail(cache: EmbCache, sae: str, atom: int, table: pd.DataFrame, D: np.ndarray, items: pd.DataFrame,
                factors: pd.DataFrame, kinds: dict, top: int = 12) -> None:
    """Top images and texts side by side, energies, histograms, neighbours, anchors, factors.

    ``items`` is ``cache.items()`` indexed by id; ``factors``/``kinds`` as in ``factor_profile``.
    """
    row = table.set_index("atom").loc[atom]
    st.subheader(f"Atom {atom} — {row['class']}")
    m = st.columns(5)
    m[0].metric("μ (image share of energy)", "—" if pd.isna(row["mu"]) else f"{row['mu']:.3f}")
    m[1].metric("Energy, images", f"{row['energy_image']:.4g}")
    m[2].metric("Energy, texts", f"{row['energy_text']:.4g}")
    m[3].metric("Fires on images", f"{row['freq_image']:.3%}")
    m[4].metric("Fires on texts", f"{row['freq_text']:.3%}")
    left, right = st.columns(2)
    ti = sae_store.top_items(cache, sae, atom, "image", top)
    tt = sae_store.top_items(cache, sae, atom, "text", top)
    with left:
        st.markdown("**Top images**")
        if ti.empty:
            st.write("never fires on images")
        image_grid(cache, ti["id"], [f"{v:.3f}" for v in ti["value"]], cols=4)
    with right:
        st.markdown("**Top texts**")
        if tt.empty:
            st.write("never fires on texts")
        st.dataframe(pd.DataFrame({"text": items["text"].reindex(tt["id"]).to_numpy(), "activation": tt["value"].round(4)}),
                     hide_index=True, width="stretch")
    hist = sae_store.histogram(cache, sae, atom)
    if not hist.empty:
        fig = go.Figure([go.Bar(x=(g["lo"] + g["hi"]) / 2, y=g["count"], name=mod, opacity=0.7)
                         for mod, g in hist.groupby("modality")])
        fig.update_layout(barmode="overlay", height=220, margin=dict(t=20, b=20), xaxis_title="activation",
                          yaxis_title="items")
        st.plotly_chart(fig, width="stretch", key="atom_hist")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Nearest atoms (dictionary cosine)**")
        near, cos = nearest_atoms(D, atom, 8)
        st.dataframe(pd.DataFrame({"atom": near, "cosine": cos.round(4),
                                   "class": table.set_index("atom").loc[near, "class"].to_numpy()}), hide_index=True)
    with c2:
        prof = factor_profile(factors, kinds, np.concatenate([ti["id"].to_numpy(), tt["id"].to_numpy()]))
        if not prof.empty:
            st.markdown("**Factor values this atom tracks** (top items vs base rate)")
            st.dataframe(prof.head(6), hide_index=True)
    anchors = sae_store.anchors(cache, sae, atom)
    if not anchors.empty:
        st.markdown("**Built from these data points** (archetypal anchors, with weights)")
        img_ids = [i for i in anchors["id"] if items.loc[i, "modality"] == "image"]
        image_grid(cache, img_ids, [f"w={w:.2f}" for i, w in zip(anchors["id"], anchors["weight"]) if i in img_ids])
        txt = anchors[[items.loc[i, "modality"] == "text" for i in anchors["id"]]]
        if len(txt):
            st.dataframe(pd.DataFrame({"text": items.loc[txt["id"], "text"].to_numpy(), "weight": txt["weight"].round(3)}),
                         hide_index=True)


def code_table(code: pd.DataFrame, key: str) -> None:
    """Atoms a code uses (atom, weight, class); a click opens the atom."""
    if code.empty:
        st.write("the code is empty")
        return
    event = st.dataframe(code, hide_index=True, on_select="rerun", selection_mode="single-row", key=key)
    if event is not None and event.selection.rows:
        open_atom(int(code.iloc[event.selection.rows[0]]["atom"]))


def atom_map(xy: np.ndarray, table: pd.DataFrame, colour: str) -> None:
    """Scatter of the atoms; clicking one opens it."""
    fig = go.Figure()
    if colour == "class":
        for cls, colr in CLASS_COLOURS.items():
            rows = np.nonzero(table["class"].to_numpy() == cls)[0]
            fig.add_trace(go.Scattergl(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=cls, customdata=rows,
                                       marker=dict(color=colr, size=7), hovertext=[f"atom {r}" for r in rows]))
    else:
        fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=np.arange(len(xy)),
                                   marker=dict(color=table["mu"].fillna(0.5), colorscale="RdBu_r", cmin=0, cmax=1,
                                               size=7, colorbar=dict(title="μ")),
                                   hovertext=[f"atom {a}: μ={m:.2f}" for a, m in zip(table["atom"], table["mu"].fillna(-1))]))
    fig.update_layout(height=520, margin=dict(t=20), dragmode="select")
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="atom_map")
    pts = event.selection.points if event is not None else []
    if len(pts) == 1 and pts[0].get("customdata") is not None:
        open_atom(int(pts[0]["customdata"]))
