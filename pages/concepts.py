"""Concepts: CRAFT concepts, their importance and the interactive strategic cluster graph (docs/METHODS.md §2)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from engine.concepts import cache, classifiers, figures, importance, render
from engine.concepts.precompute import METHODS
from engine.core.names import store_stamp
from ui.state import set_url, synced_select

st.title("Concepts and the strategic cluster graph")
st.caption("CRAFT concepts (crops → NMF) of one class, their importance by Sobol indices and gradient × input, "
           "and every image placed by its concept-importance vector. Click a point; lasso a cluster with the "
           "chart toolbar's lasso tool.")


@st.cache_data(show_spinner=False, max_entries=4)
def _caches(stamp: tuple) -> list[dict]:
    return [{**c, "path": str(c["path"])} for c in cache.list_caches()]


@st.cache_data(show_spinner=False)
def _load(path: str, mtime: float) -> dict:
    return {"meta": cache.meta(path), "concepts": cache.concepts(path), "images": cache.images(path),
            "crops": cache.crops(path), "fidelity": cache.fidelity_curves(path), "report": cache.report(path),
            "maco": cache.maco_images(path),
            "imp": {m: cache.importance_matrix(path, m) for m in METHODS}, "algos": cache.layouts_available(path)}


@st.cache_data(show_spinner=False)
def _layout(path: str, mtime: float, method: str, algo: str) -> pd.DataFrame:
    return cache.layout(path, method, algo)


def _missing(model: str, class_name: str) -> None:
    """No cache for this model/class: say how to build it (the page itself never writes)."""
    images = "" if model == "fmnist-cnn" else " --images DIR"
    st.info(f"No concept cache for **{model} / {class_name}** yet. Build it with "
            f"`geolens precompute-concepts --model {model} --class \"{class_name}\"{images}`, then reload this page."
            + ("" if model == "fmnist-cnn" else " DIR is a folder of .jpg/.png images to explain."))


def _on_select() -> None:
    """Cluster-graph selection: one point → the clicked image; several → the lasso grid."""
    sel = st.session_state.get("concept_chart", {}).get("selection", {})
    rows = [int(p["customdata"]) for p in sel.get("points", []) if "customdata" in p]
    if len(rows) == 1:
        st.session_state["concept_img"] = rows[0]
        st.session_state["concept_lasso"] = []
    elif rows:
        st.session_state["concept_lasso"] = rows


# ----------------------------------------------------------------------------- choices
caches = _caches(store_stamp())  # re-listed only when the cache folder changes
models = list(dict.fromkeys([c["model"] for c in caches] + classifiers.names()))
model = synced_select("Model", models, "model", default="fmnist-cnn", sidebar=True)
names = classifiers.class_names_of(model)
cached_classes = [c["class_name"] for c in caches if c["model"] == model]
class_name = synced_select("Class", names, "class", default=(cached_classes or ["Sneaker"])[0], sidebar=True,
                           fmt=lambda c: f"{c} ✓" if c in cached_classes else c)
found = [c for c in caches if c["model"] == model and c["class_name"] == class_name]
if not found:
    if model == "fmnist-cnn" and class_name in ("Sneaker", "Bag"):  # built by the default stage: its progress here
        from ui.jobs import pending_or_ready

        pending_or_ready("concepts", False, hint=f"Other classes: `geolens precompute-concepts --model {model} --class NAME`.",
                         recheck=lambda: any(c["model"] == model and c["class_name"] == class_name for c in cache.list_caches()))
    else:
        _missing(model, class_name)
    st.stop()
if len(found) > 1:
    pick = st.sidebar.selectbox("Settings", range(len(found)), key="concept_settings", format_func=lambda i: (
        f"k={found[i]['config']['n_concepts']} p={found[i]['config']['patch_size']} "
        f"n≤{found[i]['config']['max_images']} · {found[i]['path'].rsplit('-', 1)[-1][:6]}"))
    entry = found[pick]
else:
    entry = found[0]
data = _load(entry["path"], entry["mtime"])
meta, con, imgs, rep = data["meta"], data["concepts"], data["images"], data["report"]
method = synced_select("Importance", list(METHODS), "imp", sidebar=True, fmt=lambda m: figures.METHOD_LABELS[m])
algo = synced_select("Layout", data["algos"], "layout", sidebar=True)
k, n = len(con), len(imgs)
imp = data["imp"][method]  # (n, k)
top = importance.top_concepts(imp)
important = cache.important(con, method, meta["config"]["min_images"])
gvals = cache.global_importance(con, method)
st.sidebar.caption(f"{n} images predicted as {class_name} · {k} concepts · patch {meta['stats']['patch']} px · "
                   f"NMF relative error {rep['reconstruction_error']['crops']:.3f} (crops), "
                   f"{rep['reconstruction_error']['images']:.3f} (images)")

# ----------------------------------------------------------------------------- cluster graph + clicked image
if "concept_img" not in st.session_state or st.session_state["concept_img"] >= n:
    st.session_state["concept_img"] = 0
left, right = st.columns([3, 2])
with left:
    st.subheader("Strategic cluster graph")
    xy = _layout(entry["path"], entry["mtime"], method, algo)
    fig = figures.cluster_graph(xy, top, important, list(imgs["name"]), st.session_state["concept_img"])
    st.plotly_chart(fig, key="concept_chart", on_select=_on_select, selection_mode=("points", "lasso"),
                    width="stretch")
with right:
    row = int(st.number_input("Image (click a point)", 0, n - 1, key="concept_img"))
    set_url(img=row)
    det = cache.image_detail(entry["path"], row)
    img = render.from_png(det["thumb"])
    order = np.argsort(-imp[row])[:3]
    ins = meta["classifier"]["input_size"]
    panels = [img] + [render.overlay(img, render.heat_image(det["heat"][..., c], ins, det["grid"], img.shape[0]),
                                     render.hex_to_rgb(figures.concept_colour(int(c)))) for c in order]
    st.image(panels, caption=[f"#{row} {imgs['name'][row]}"] + [f"concept {c}" for c in order], width=110)
    st.caption(f"Selected image #{row} ({imgs['name'][row]}): class probability {imgs['prob'][row]:.3f}, "
               f"top concepts {', '.join(str(int(c)) for c in order)} (their heatmaps tinted in their colours).")
    local_title = f"image #{row}: " + ("u_i (W_i · w_c)" if method == "gradient_input" else "Sobol total index")
    st.plotly_chart(figures.importance_bars(imp[row], method, important, local_title, local=True),
                    width="stretch", key="concept_img_bars")

# ----------------------------------------------------------------------------- lasso grid
lasso = st.session_state.get("concept_lasso") or []
if lasso:
    las = cache.lasso_summary(top, lasso, k)
    rows = las["rows"]
    st.subheader(f"Lassoed cluster: {len(rows)} images, shared concept {las['concept']} "
                 f"(top concept of {las['count']} of them)")
    st.image(cache.thumbs(entry["path"], rows[:60]), caption=[f"#{r}" for r in rows[:60]], width=72)
    if st.button("Clear selection", key="concept_clear"):
        st.session_state["concept_lasso"] = []
        st.rerun()

# ----------------------------------------------------------------------------- global views
st.subheader("Global importance")
c1, c2 = st.columns(2)
c1.plotly_chart(figures.importance_bars(gvals, method, important), width="stretch", key="concept_gbars")
c2.plotly_chart(figures.concept_map(con[["map_x", "map_y"]].to_numpy(), gvals, important),
                width="stretch", key="concept_map")
table = pd.DataFrame({
    "concept": con["concept"], "% of logit": rep["importance"]["gradient_input_pct_logit"],
    "Sobol S_T": rep["importance"]["sobol_total"], "cluster (grad×input)": rep["cluster_sizes"]["gradient_input"],
    "cluster (Sobol)": rep["cluster_sizes"]["sobol"],
    "top classes (cosine)": [", ".join(f"{a} {b:.2f}" for a, b in json.loads(t)[:3]) for t in con["top_classes"]],
})
st.dataframe(table, hide_index=True, key="concept_table")
st.caption(f"Same numbers as `geolens report concepts --model {model} --class \"{class_name}\" --json`.")

# ----------------------------------------------------------------------------- gallery
st.subheader("Concept gallery")
by_imp = [int(i) for i in np.argsort(-gvals)]
gal = st.selectbox("Concept", by_imp, key="concept_gallery",
                   format_func=lambda i: f"concept {i} ({gvals[i]:.3g}{' %' if method == 'gradient_input' else ''})")
cr = data["crops"][data["crops"]["concept"] == gal]
mc, mrep = data["maco"], rep["maco"]
g1, g2 = st.columns([1, 2]) if len(mc) else (None, st.container())
if len(mc):
    row_m = mc[mc["concept"] == gal].iloc[0]
    g1.image([bytes(row_m["image"]), render.with_alpha(bytes(row_m["image"]), bytes(row_m["alpha"]))],
             caption=[f"MACO image of concept {gal}", "with its transparency map"], width=150)
    g1.caption(f"Feature visualisation (MACO, {mrep['steps']} steps, {mrep['size']} px, spectrum "
               f"{mrep['spectrum']}): objective {mrep['objective_first'][gal]:.3g} → {mrep['objective_last'][gal]:.3g}. "
               "Transparent where the objective's gradient was small.")
g2.image([bytes(b) for b in cr["png"]], caption=[f"#{r}" for r in cr["row"]], width=72)
tops = ", ".join(f"{a} ({b:.2f})" for a, b in json.loads(con["top_classes"][gal]))
g2.caption(f"Top {len(cr)} crops of concept {gal} (highest NMF coefficient). Closest classes by cosine "
           f"between the concept and each class's weight row: {tops}.")
if len(mc):
    st.image([bytes(b) for b in mc["image"].iloc[by_imp]], caption=[f"concept {i}" for i in by_imp], width=96)
    st.caption("Every concept's MACO image, most important first.")
else:
    st.caption("This cache has no MACO concept images; rebuild it with "
               f"`geolens precompute-concepts --model {model} --class \"{class_name}\" --force`.")

# ----------------------------------------------------------------------------- fidelity
st.subheader("Fidelity: concept deletion and insertion")
f1, f2 = st.columns([3, 2])
f1.plotly_chart(figures.fidelity_curves(data["fidelity"]), width="stretch", key="concept_fid")
auc = pd.DataFrame(rep["fidelity_auc"]).rename_axis("ordering").reset_index()
f2.dataframe(auc, hide_index=True, key="concept_auc")
f2.caption("AUC of mean class probability: lower deletion and higher insertion beat the random ordering.")
