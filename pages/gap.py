"""Modality gap: how far apart images and captions sit, how well they still retrieve each other,
and where every item lies in one joint map (docs/METHODS.md §1).

Read-only: the numbers and the map's layouts are built by `geolens gap build --cache NAME`
(engine.gap.report, engine.gap.layout); the page shows that command when they are missing."""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import streamlit as st

from engine.core import names
from engine.embcache import EmbCache, list_caches
from engine.gap import figures, layout, metrics, report
from engine.gap.report import factor_columns, load_points
from ui.state import set_url, synced_select, url_value

GRID_IMAGES = 48  # selected images per grid page
GRID_TEXTS = 100  # selected captions per grid page
NEIGHBOURS = 8

st.title("Modality gap")
st.caption("Images and captions of a vision-language model, side by side: the gap measures, retrieval, "
           "and a joint map. Drag a box or lasso on the map to see the items (every point counts, also those "
           "drawn only in the density layer); click a point for its partner and its nearest neighbours in the "
           "other modality.")


@st.cache_data(show_spinner=False, max_entries=4)
def _caches(stamp: tuple) -> dict[str, tuple[str, float]]:
    return {c.name: (str(c.path), c.path.stat().st_mtime) for c in list_caches()}


@st.cache_resource(show_spinner=False, max_entries=2)
def _points(path: str, mtime: float):
    return load_points(EmbCache(path))


@st.cache_resource(show_spinner=False, max_entries=2)
def _galleries(path: str, mtime: float):
    """Unit rows of images and captions on the engine's device, for nearest-neighbour clicks."""
    pts = _points(path, mtime)
    return metrics.as_unit_rows(pts.img), metrics.as_unit_rows(pts.txt)


@st.cache_data(show_spinner=False, max_entries=8)
def _read_json(art_path: str) -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(art_path) / "report.json").read_text())


def _report_artifact(cache: EmbCache):
    """The stored report artifact, or None; a cheap lookup (never writes), re-checked every run."""
    return report.find(cache)


@st.cache_resource(show_spinner=False, max_entries=8)
def _coords(art_path: str, method: str) -> np.ndarray:
    """The layout's coordinates (float32 ``.npy``), read into memory once: 16 MB at 2M points."""
    from pathlib import Path

    return np.load(Path(art_path) / f"{layout.METHODS[layout.METHODS.index(method)]}.npy")


@st.cache_resource(show_spinner=False, max_entries=8)
def _figure(path: str, mtime: float, art_path: str, method: str, colour: str, segments: bool):
    """The map without the highlight ring (which changes with every click), and its counts."""
    pts = _points(path, mtime)
    return figures.joint_map(_coords(art_path, method), pts.table, colour, segments)


@st.cache_resource(show_spinner=False, max_entries=8)
def _gap_hist(art_path: str):
    """The gap-direction histogram (binned once per report: 2M values at 10⁶ pairs)."""
    return figures.gap_histogram(*report.read_projection(art_path))


def _select(xy: np.ndarray, geom: dict) -> np.ndarray:
    if geom["kind"] == "box":
        return layout.select_box(xy, geom["x"], geom["y"])
    return layout.select_lasso(xy, geom["x"], geom["y"])


def _on_select() -> None:
    """Map events: a box or lasso is kept as geometry and resolved over all points; a click picks the item."""
    sel = st.session_state.get("gap_chart", {}).get("selection", {})
    for kind in ("box", "lasso"):
        shapes = [s for s in sel.get(kind) or [] if len(s.get("x", [])) >= 2]
        if shapes:
            st.session_state["gap_geom"] = {"kind": kind, "x": list(shapes[-1]["x"]), "y": list(shapes[-1]["y"])}
            st.session_state["gap_page"] = 1
            return
    rows = sorted({int(p["customdata"]) for p in sel.get("points", []) if p.get("customdata") is not None})
    if len(rows) == 1:
        st.session_state["gap_point"] = rows[0]


def _build_hint(name: str, what: str) -> None:
    from ui.jobs import building, pending_or_ready

    if building("shapes"):  # the default build is on it: its progress, and the page fills in when it is done
        pending_or_ready("shapes", False, hint=f"{what} not built yet (`geolens gap build --cache {name}`).")
        return
    st.info(f"{what} of this cache not built yet. Pages only read: build once (progress in the terminal), "
            "then reload this page:")
    st.code(f"geolens gap build --cache {name}", language="bash")


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
        interval = r[flavour].get("interval")
        for direction in ("image_to_text", "text_to_image", "mean"):
            row = {"flavour": label, "direction": direction.replace("_", " "), **r[flavour][direction]}
            if interval:
                row.update({f"{k} 95% interval": f"[{lo:.4f}, {hi:.4f}]" for k, (lo, hi) in interval[direction].items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _full_gallery_note(rep: dict) -> str:
    f = rep["retrieval"]["full_gallery"]
    if f.get("exact", True):
        return f"Full gallery: exact, all {rep['n_pairs']:,} queries per direction."
    return (f"**Full gallery: sampled.** {rep['n_pairs']:,} pairs exceed the exact limit of {f['exact_limit']:,} "
            f"on the device that built the report ({rep.get('device', '?')}), so {f['queries']:,} seeded queries per "
            "direction were each ranked against the whole gallery; the 95 % Wilson intervals are in the table.")


def _show_item(cache: EmbCache, pts, row: int, galleries) -> None:
    """The clicked item, its true partner and its nearest neighbours in the other modality."""
    t, n = pts.table, len(pts.pair_ids)
    item, i = t.iloc[row], row % n  # i: the pair's row in img/txt
    is_img = item["modality"] == "image"
    emb, other = (pts.img[i], galleries[1]) if is_img else (pts.txt[i], galleries[0])
    idx, cos, (above, partner_cos) = metrics.neighbours(emb, other, NEIGHBOURS, partner=i)
    st.markdown(f"**#{item['id']}** — {item['modality']} of pair {item['pair_id']}")
    img_id = int(t["id"].iloc[i])
    thumb = cache.thumbnails([img_id]).get(img_id)
    if thumb:
        st.image(thumb, width=120, caption="this image" if is_img else "its true partner")
    st.markdown(f"{'True partner' if is_img else 'This caption'}: *{t['text'].iloc[n + i]}*")
    st.caption(f"cosine with its true partner {partner_cos:.4f}; {above:,} items of the other modality score higher")
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


def _grid(cache: EmbCache, pts, rows: np.ndarray, how: str) -> None:
    """The selection, paged: counts of everything selected, then one page of images and captions."""
    n = len(pts.pair_ids)
    imgs, txts = rows[rows < n], rows[rows >= n]
    st.subheader(f"Selection: {len(imgs):,} images and {len(txts):,} captions")
    pages = max(1, math.ceil(len(imgs) / GRID_IMAGES), math.ceil(len(txts) / GRID_TEXTS))
    if not 1 <= int(st.session_state.get("gap_page", 1)) <= pages:  # a smaller selection than the last one
        st.session_state["gap_page"] = 1
    top = st.columns([1, 3, 1])
    page = int(top[0].number_input("Page", 1, pages, key="gap_page")) if pages > 1 else 1
    top[1].caption(f"{how} · page {page} of {pages}: images {GRID_IMAGES} and captions {GRID_TEXTS} per page")
    if top[2].button("Clear selection", key="gap_clear"):
        st.session_state["gap_selected"] = []
        st.rerun()
    t = pts.table
    shown = imgs[(page - 1) * GRID_IMAGES: page * GRID_IMAGES]
    if len(shown):
        th = cache.thumbnails(t["id"].iloc[shown].tolist())
        ids = [int(i) for i in t["id"].iloc[shown] if int(i) in th]
        if ids:
            st.image([th[i] for i in ids], caption=[f"#{i}" for i in ids], width=72)
        else:
            st.dataframe(t.iloc[shown][["id", "pair_id"]], hide_index=True, key="gap_grid_img")
    shown = txts[(page - 1) * GRID_TEXTS: page * GRID_TEXTS]
    if len(shown):
        st.dataframe(t.iloc[shown][["id", "pair_id", "text"]], hide_index=True, key="gap_grid_text")


# ----------------------------------------------------------------------------- choices
caches = _caches(names.store_stamp())  # re-listed only when the cache folder changes
if not caches:
    from ui.jobs import pending_or_ready  # the default build's progress here, or a button that starts it

    pending_or_ready("shapes", False, hint="Or encode your own pairs: "
                     "`geolens precompute --dataset captions.csv --model ViT-B-32 --pretrained openai`.",
                     recheck=lambda: bool(list_caches()))
    st.stop()
name = synced_select("Cache", list(caches), key="cache")
path, mtime = caches[name]
cache = EmbCache(path)
rep_art = _report_artifact(cache)
lay_art_found = layout.find_layout(cache)
if rep_art is None and lay_art_found is None:
    _build_hint(name, "The gap report and the joint map are")
    st.stop()
t0 = time.perf_counter()
with st.spinner(f"Loading {cache.manifest['n_pairs']:,} pairs (once per server)…"):
    pts = _points(path, mtime)
n = len(pts.pair_ids)
method = synced_select("Projection", list(layout.METHODS), key="proj", sidebar=True, fmt=str.upper)
colour = synced_select("Colour by", ["modality"] + factor_columns(pts), key="colour", sidebar=True)
segments = st.sidebar.toggle("Join true pairs", key="gap_segments")
if st.session_state.get("gap_for") != name:  # a new cache resets the item (from ?item= if valid) and the selection
    row_of = {int(i): r for r, i in enumerate(pts.table["id"])} if str(url_value("item", "")).isdigit() else {}
    wanted = url_value("item", "")
    st.session_state["gap_point"] = row_of.get(int(wanted), 0) if str(wanted).isdigit() else 0
    st.session_state["gap_selected"] = []
    st.session_state.pop("gap_geom", None)
    st.session_state["gap_for"] = name
st.sidebar.caption(f"{n:,} pairs · d = {pts.img.shape[1]} · model {cache.manifest['model'].get('arch', '?')} · "
                   f"loaded in {time.perf_counter() - t0:.1f} s")

# ----------------------------------------------------------------------------- numbers
if rep_art is None:
    _build_hint(name, "The gap report is")
    rep = None
else:
    rep = _read_json(str(rep_art.path))
    _cards(rep)
    st.subheader("Retrieval (recall@k)")
    st.dataframe(_retrieval_table(rep), hide_index=True, key="gap_retrieval")
    st.caption("Batched: each query competes only with the other pairs of its random batch (as the Iso-Energy "
               "authors compute it). Full gallery: against every item of the other modality (stricter). Ties are "
               f"broken at random, in expectation. {_full_gallery_note(rep)} Same numbers as "
               f"`geolens report gap --cache {name} --json`.")

# ----------------------------------------------------------------------------- joint map + clicked item
point = int(st.session_state.get("gap_point", 0))
point = point if 0 <= point < 2 * n else 0
left, right = st.columns([3, 2])
with left:
    st.subheader(f"Joint map ({method.upper()})")
    if lay_art_found is None:
        _build_hint(name, "The joint map is")
        xy = None
    else:
        art_path = str(lay_art_found.path)
        xy = _coords(art_path, method)
        fig, info = _figure(path, mtime, art_path, method, colour, segments)
        partner = point + n if point < n else point - n
        st.plotly_chart(figures.with_highlight(fig, xy, [point, partner]), key="gap_chart", on_select=_on_select,
                        selection_mode=("points", "box", "lasso"), width="stretch")
        note = f"{info.n_drawn:,} of {info.n_points:,} points drawn"
        if info.density:
            note += f" (a seeded sample over a density image of all {info.n_points:,} points; selections count them all)"
        if segments:
            note += f" · {info.n_segments:,} of {info.n_pairs:,} true-pair segments"
        meta = lay_art_found.meta
        secs = meta.get("seconds", {})
        how = (f"PCA in {secs.get('pca', 0):.1f} s" if method == "pca" else
               f"UMAP fitted on {meta['umap_fitted']:,} points in {secs.get('umap_fit', 0):.1f} s"
               + (f", {meta['interpolated']:,} more placed by k-NN interpolation in {secs.get('umap_interpolate', 0):.1f} s"
                  if meta.get("interpolated") else ""))
        st.caption(f"{note} · circles are images, diamonds captions · {how}, by `geolens gap build`")
with right:
    st.subheader("Item")
    _show_item(cache, pts, point, _galleries(path, mtime))
set_url(item=int(pts.table["id"].iloc[point]))

# ----------------------------------------------------------------------------- selection grid
geom = st.session_state.pop("gap_geom", None)
if geom is not None and xy is not None:
    t1 = time.perf_counter()
    st.session_state["gap_selected"] = _select(xy, geom)
    st.session_state["gap_how"] = f"{geom['kind']} over all {2 * n:,} points in {time.perf_counter() - t1:.2f} s"
selected = np.asarray(st.session_state.get("gap_selected", []), dtype=np.int64)
selected = selected[(selected >= 0) & (selected < 2 * n)]
if len(selected):
    _grid(cache, pts, selected, st.session_state.get("gap_how", "selection"))

# ----------------------------------------------------------------------------- gap direction
st.subheader("Projection on the gap direction")
if rep_art is not None:
    st.plotly_chart(_gap_hist(str(rep_art.path)), width="stretch", key="gap_hist")
    gp = rep["gap_projection"]
    st.caption(f"⟨x, Δ/‖Δ‖⟩ with Δ = mean(image) − mean(text): images {gp['image_mean']:.4f} ± {gp['image_std']:.4f}, "
               f"captions {gp['text_mean']:.4f} ± {gp['text_std']:.4f}.")
