"""Modality gap: how far apart images and captions sit, how well they still retrieve each other,
and where every item lies in one joint map (METHODS.md §1)."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from engine.embcache import EmbCache, list_caches
from engine.gap import figures, metrics
from engine.gap.projection import PROJECTIONS, project, stack
from engine.gap.report import factor_columns, gap_report, load_points
from ui.state import set_url, synced_select, url_value

GRID_MAX = 48
NEIGHBOURS = 8

st.title("Modality gap")
st.caption("Images and captions of a vision-language model, side by side: the gap measures, retrieval, "
           "and a joint map. Drag a box or lasso on the map to see the items; click a point for its partner "
           "and its nearest neighbours in the other modality.")


@st.cache_data(ttl=5, show_spinner=False)
def _caches() -> dict[str, tuple[str, float]]:
    return {c.name: (str(c.path), c.path.stat().st_mtime) for c in list_caches()}


@st.cache_resource(show_spinner=False, max_entries=4)
def _points(path: str, mtime: float):
    return load_points(EmbCache(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _report(path: str, mtime: float) -> dict:
    return gap_report(EmbCache(path), points=_points(path, mtime))


@st.cache_resource(show_spinner=False, max_entries=8)
def _map(path: str, mtime: float, method: str):
    pts = _points(path, mtime)
    return project(EmbCache(path), method, pts.table["id"].to_numpy(), stack(pts.img, pts.txt))


@st.cache_resource(show_spinner=False, max_entries=4)
def _gap_coords(path: str, mtime: float) -> tuple[np.ndarray, np.ndarray]:
    pts = _points(path, mtime)
    u = metrics.gap_direction(pts.img, pts.txt)
    return metrics.gap_projection(pts.img, u), metrics.gap_projection(pts.txt, u)


def _on_select() -> None:
    """Map events: a box/lasso fills the grid; a single click picks the item."""
    sel = st.session_state.get("gap_chart", {}).get("selection", {})
    rows = sorted({int(p["customdata"]) for p in sel.get("points", []) if p.get("customdata") is not None})
    if sel.get("box") or sel.get("lasso"):
        st.session_state["gap_selected"] = rows
    elif len(rows) == 1:
        st.session_state["gap_point"] = rows[0]


def _cards(rep: dict) -> None:
    g, c, p = rep["gap"], rep["cosine"], rep["probe"]
    sub = (f"exact OT on {g['W_points'][0]:,} + {g['W_points'][1]:,} points"
           + (" (seeded subsample)" if g["W_subsampled"] else " (all points)"))
    cols = st.columns(6)
    cols[0].metric("DiM", f"{g['DiM']:.4f}", help="centroid distance ‖mean(image) − mean(text)‖₂")
    cols[1].metric("W (OT)", f"{g['W']:.4f}", help=f"optimal-transport cost, cost 1 − cos; {sub}")
    cols[2].metric("Pair cosine", f"{c['true_pairs']:.4f}", help="mean cosine of true image-caption pairs")
    cols[3].metric("Image cone", f"{c['intra_image']:.4f}", help="mean cosine between distinct images")
    cols[4].metric("Text cone", f"{c['intra_text']:.4f}", help="mean cosine between distinct captions")
    cols[5].metric("Probe accuracy", f"{p['accuracy']:.4f}",
                   help=f"held-out accuracy of a linear probe telling image from text; logistic regression, {p['n_train']:,} train / {p['n_test']:,} held-out points")
    st.caption(f"W: {sub}." + (" **W was computed on a subsample.**" if g["W_subsampled"] else ""))


def _retrieval_table(rep: dict) -> pd.DataFrame:
    r = rep["retrieval"]
    rows = []
    for flavour, label in (("batched", f"random batches of {r['batch_size']}"), ("full_gallery", "full gallery")):
        for direction in ("image_to_text", "text_to_image", "mean"):
            rows.append({"flavour": label, "direction": direction.replace("_", " "), **r[flavour][direction]})
    return pd.DataFrame(rows)


def _show_item(cache: EmbCache, pts, row: int) -> None:
    """The clicked item, its true partner and its nearest neighbours in the other modality."""
    t, n = pts.table, len(pts.pair_ids)
    item, i = t.iloc[row], row % n  # i: the pair's row in img/txt
    is_img = item["modality"] == "image"
    emb, other = (pts.img[i], pts.txt) if is_img else (pts.txt[i], pts.img)
    sims = metrics.normalise(other) @ metrics.normalise(emb[None])[0]  # (n,)
    idx, cos = metrics.top_k_cosine(emb, other, NEIGHBOURS)
    st.markdown(f"**#{item['id']}** — {item['modality']} of pair {item['pair_id']}")
    img_id = int(t["id"].iloc[i])
    thumb = cache.thumbnails([img_id]).get(img_id)
    if thumb:
        st.image(thumb, width=120, caption="this image" if is_img else "its true partner")
    st.markdown(f"{'True partner' if is_img else 'This caption'}: *{t['text'].iloc[n + i]}*")
    st.caption(f"cosine with its true partner {sims[i]:.4f}; {int(np.sum(sims > sims[i]))} items of the other "
               "modality score higher")
    st.markdown(f"Nearest {'captions' if is_img else 'images'} (cosine):")
    nn_rows = idx + (n if is_img else 0)
    ids = [int(v) for v in t["id"].iloc[nn_rows]]
    th = {} if is_img else cache.thumbnails(ids)
    if th:
        st.image([th[v] for v in ids if v in th], width=72,
                 caption=[f"#{v} {c:.3f}" + (" ✓" if j == i else "") for v, c, j in zip(ids, cos, idx) if v in th])
    else:
        st.dataframe(pd.DataFrame({"id": ids, "cosine": cos, "true partner": idx == i,
                                   "caption": t["text"].iloc[nn_rows].to_numpy()}), hide_index=True, key="gap_nn")


def _grid(cache: EmbCache, pts, rows: list[int]) -> None:
    t = pts.table.iloc[rows]
    imgs, txts = t[t["modality"] == "image"], t[t["modality"] == "text"]
    st.subheader(f"Selection: {len(imgs):,} images and {len(txts):,} captions")
    if len(imgs):
        shown = imgs.head(GRID_MAX)
        th = cache.thumbnails(shown["id"].tolist())
        ids = [int(i) for i in shown["id"] if int(i) in th]
        st.image([th[i] for i in ids], caption=[f"#{i}" for i in ids], width=72)
        if len(imgs) > GRID_MAX:
            st.caption(f"showing the first {GRID_MAX} of {len(imgs):,} selected images")
    if len(txts):
        st.dataframe(txts[["id", "pair_id", "text"]].head(500), hide_index=True, key="gap_grid_text")
    if st.button("Clear selection", key="gap_clear"):
        st.session_state["gap_selected"] = []
        st.rerun()


# ----------------------------------------------------------------------------- choices
caches = _caches()
if not caches:
    from ui.jobs import pending_or_ready  # the default build's progress here, or a button that starts it

    pending_or_ready("shapes", False, hint="Or encode your own pairs: "
                     "`geolens precompute --dataset captions.csv --model ViT-B-32 --pretrained openai`.")
    st.stop()
name = synced_select("Cache", list(caches), key="cache")
path, mtime = caches[name]
cache = EmbCache(path)
t0 = time.perf_counter()
pts = _points(path, mtime)
n = len(pts.pair_ids)
method = synced_select("Projection", list(PROJECTIONS), key="proj", sidebar=True, fmt=str.upper)
colour = synced_select("Colour by", ["modality"] + factor_columns(pts), key="colour", sidebar=True)
segments = st.sidebar.toggle("Join true pairs", key="gap_segments")
if st.session_state.get("gap_for") != name:  # a new cache resets the item (from ?item= if valid) and the selection
    row_of = {int(i): r for r, i in enumerate(pts.table["id"])}
    wanted = url_value("item", "")
    st.session_state["gap_point"] = row_of.get(int(wanted), 0) if str(wanted).isdigit() else 0
    st.session_state["gap_selected"] = []
    st.session_state["gap_for"] = name
with st.spinner(f"Gap measures of {n:,} pairs (W is exact optimal transport; up to minutes at 10k points)…"):
    rep = _report(path, mtime)
st.sidebar.caption(f"{n:,} pairs · d = {pts.img.shape[1]} · model {cache.manifest['model'].get('arch', '?')} · "
                   f"loaded in {time.perf_counter() - t0:.1f} s")

# ----------------------------------------------------------------------------- numbers
_cards(rep)
st.subheader("Retrieval (recall@k)")
st.dataframe(_retrieval_table(rep), hide_index=True, key="gap_retrieval")
st.caption("Batched: each query competes only with the other pairs of its random batch (as the Iso-Energy "
           "authors compute it). Full gallery: against every item of the other modality (stricter). Ties are "
           f"broken at random, in expectation. Same numbers as `geolens report gap --cache {name} --json`.")

# ----------------------------------------------------------------------------- joint map + clicked item
point = int(st.session_state.get("gap_point", 0))
point = point if 0 <= point < 2 * n else 0
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Joint map ({method.upper()})")
    with st.spinner(f"Fitting {method.upper()} on {2 * n:,} points (once; a UMAP is then kept on disk)…"):
        m = _map(path, mtime, method)
    partner = point + n if point < n else point - n
    fig, info = figures.joint_map(m.xy, pts.table, colour, segments, highlight=[point, partner])
    st.plotly_chart(fig, key="gap_chart", on_select=_on_select, selection_mode=("points", "box", "lasso"),
                    width="stretch")
    note = f"{info.n_drawn:,} of {info.n_points:,} points drawn"
    if info.density:
        note += " (a seeded sample over a density layer of all points)"
    if segments:
        note += f" · {info.n_segments:,} of {info.n_pairs:,} true-pair segments"
    how = "read from disk" if m.cached else f"fitted in {m.seconds:.1f} s ({2 * n / max(m.seconds, 1e-9):,.0f} points/s)"
    st.caption(f"{note} · circles are images, diamonds captions · {method.upper()} {how}")
with right:
    st.subheader("Item")
    _show_item(cache, pts, point)
set_url(item=int(pts.table["id"].iloc[point]))

# ----------------------------------------------------------------------------- selection grid
if st.session_state.get("gap_selected"):
    _grid(cache, pts, [r for r in st.session_state["gap_selected"] if 0 <= r < 2 * n])

# ----------------------------------------------------------------------------- gap direction
st.subheader("Projection on the gap direction")
proj_img, proj_txt = _gap_coords(path, mtime)
st.plotly_chart(figures.gap_histogram(proj_img, proj_txt), width="stretch", key="gap_hist")
gp = rep["gap_projection"]
st.caption(f"⟨x, Δ/‖Δ‖⟩ with Δ = mean(image) − mean(text): images {gp['image_mean']:.4f} ± {gp['image_std']:.4f}, "
           f"captions {gp['text_mean']:.4f} ± {gp['text_std']:.4f}.")
