"""Bimodal atom browser: an aligned SAE's atoms with their top images and texts, and the
interventions that show bimodal atoms carry the meaning and unimodal atoms carry the gap."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine.atoms import views as atom_views
from engine.atoms.report import AtomsConfig
from engine.core import names
from engine.embcache import EmbCache, list_caches
from engine.gap import figures
from engine.gap.projection import pca_2d
from engine.gap.report import load_points
from engine.sae import store as sae_store
from ui import atoms_views as views
from ui.state import set_url, synced_select, url_value

VIEWS = ["Atoms", "Find atoms", "Atom map", "Interventions", "Vector arithmetic"]

st.title("Bimodal atoms")
st.caption("A sparse autoencoder splits embeddings into atoms. Bimodal atoms fire on images and texts alike and carry "
           "the cross-modal meaning; unimodal atoms fire on one modality and carry the modality gap (Iso-Energy).")


@st.cache_data(show_spinner=False, max_entries=4)
def _caches(stamp: tuple) -> dict[str, str]:
    return {c.name: str(c.path) for c in list_caches() if len(sae_store.list_saes(c))}


@st.cache_data(show_spinner=False, max_entries=16)
def _atoms(path: str, sae: str, eps: float) -> pd.DataFrame:
    return sae_store.atom_table(EmbCache(path), sae, eps)


@st.cache_data(show_spinner=False, max_entries=4)
def _items(path: str) -> pd.DataFrame:
    return EmbCache(path).items().set_index("id")


@st.cache_data(show_spinner=False, max_entries=4)
def _factors(path: str) -> tuple[pd.DataFrame, dict]:
    c = EmbCache(path)
    return c.factors(), c.factor_kinds()


@st.cache_data(show_spinner=False, max_entries=8)
def _dictionary(path: str, sae: str) -> np.ndarray:
    return sae_store.dictionary(EmbCache(path), sae)


@st.cache_resource(show_spinner=False, max_entries=4)
def _point_table(path: str) -> pd.DataFrame:
    return load_points(EmbCache(path)).table


@st.cache_resource(show_spinner=False, max_entries=4)
def _pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
    img, _, pid = EmbCache(path).pairs()
    return img, pid


@st.cache_resource(show_spinner=False, max_entries=4)
def _model(path: str, sae: str):
    return sae_store.load_sae(EmbCache(path), sae)


@st.cache_resource(show_spinner=False, max_entries=2)
def _encoder(arch: str, pretrained: str | None):
    from engine.encoders import Encoder, ModelSpec

    return Encoder(ModelSpec(arch, pretrained))


@st.cache_data(show_spinner=False, max_entries=16)
def _report(path: str, sae: str, eps: float, stamp: tuple):
    """(report, bimodal map, its pair ids) of the built atoms artifact, or None: the page never builds."""
    art = atom_views.find_atoms(EmbCache(path), sae, AtomsConfig(eps=eps))
    if art is None:
        return None
    xy, pid = atom_views.bimodal_map(art)
    return atom_views.read_report(art), xy, pid


caches = _caches(names.store_stamp())  # re-listed only when the cache folder changes
if not caches:
    from ui.jobs import pending_or_ready  # the default SAEs' build progress here, or a button that starts it

    pending_or_ready("saes", False, hint="Or train one on any cache: `geolens train-sae --cache NAME` "
                     "(plain baseline: `--beta 0`).", recheck=lambda: any(len(sae_store.list_saes(c)) for c in list_caches()))
    st.stop()
name = synced_select("Cache", list(caches), key="cache", sidebar=True)
cache = EmbCache(caches[name])
saes = sae_store.list_saes(cache)
sae = synced_select("SAE", list(saes["name"]), key="sae", sidebar=True)
info = saes.set_index("name").loc[sae]
st.sidebar.caption(f"{info['arch']}, {info['atoms']} atoms, k={info['k']}, β={info['beta']:g}, "
                   f"explained variance {float(info['ev'] or 0):.3f}")
eps = st.sidebar.slider("ε (unimodal if μ < ε or μ > 1 − ε)", 0.0, 0.45, float(url_value("eps", 0.05)), 0.01, key="eps")
set_url(eps=None if eps == 0.05 else eps)
table = _atoms(str(cache.path), sae, eps)
counts = table["class"].value_counts()
cols = st.columns(4)
for col, cls in zip(cols, ["bimodal", "image", "text", "dead"]):
    col.metric(f"{cls} atoms" if cls in ("bimodal", "dead") else f"{cls}-only atoms", int(counts.get(cls, 0)))

if "atom" in st.query_params and "atom" not in st.session_state:
    st.session_state["atom"] = int(st.query_params["atom"])
view = st.radio("View", VIEWS, horizontal=True, key="view", index=VIEWS.index(url_value("view", "Atoms")))
set_url(view=None if view == "Atoms" else view)
D = _dictionary(str(cache.path), sae)

if view == "Atoms":
    views.atom_table_view(table)
    atom = st.session_state.get("atom")
    if atom is not None and 0 <= atom < len(table):
        views.atom_detail(cache, sae, int(atom), table, D, _items(str(cache.path)), *_factors(str(cache.path)))
    else:
        st.info("Select a row, type an atom id, or open a link with ?atom=ID.")

elif view == "Find atoms":
    left, right = st.columns(2)
    with left:
        text = st.text_input("A text (encoded by the cache's model)", key="find_text")
        if text:
            m = cache.manifest["model"]
            x = _encoder(m["arch"], m["pretrained"]).encode_texts([text])
            code = atom_views.code_of(_model(str(cache.path), sae), x[0])
            code = code.merge(table[["atom", "class", "mu"]], on="atom", how="left")
            views.code_table(code, "find_text_code")
    with right:
        items = _items(str(cache.path))
        img_ids = items.index[items["modality"] == "image"].to_numpy()
        pick = st.number_input("An image (item id)", min_value=int(img_ids.min()), max_value=int(img_ids.max()),
                               value=int(img_ids.min()), step=2, key="find_image")
        views.image_grid(cache, [pick], [f"item {pick}"], cols=1)
        views.code_table(sae_store.item_codes(cache, sae, int(pick)), "find_image_code")

elif view == "Atom map":
    c1, c2 = st.columns(2)
    method = c1.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="atom_map_method")
    colour = c2.radio("Colour", ["class", "μ"], horizontal=True, key="atom_map_colour")
    if method == "PCA":
        xy = pca_2d(D)
    else:
        from engine.gap.projection import UMAPConfig, umap_2d

        xy = st.cache_data(umap_2d, show_spinner="UMAP of the dictionary (first run compiles numba)…")(D, UMAPConfig())
    views.atom_map(xy, table, colour)

elif view == "Interventions":
    built = _report(str(cache.path), sae, eps, names.store_stamp())
    if built is None:
        st.info(f"The interventions at ε = {eps:g} are not built yet. Build them (once) with "
                f"`geolens atoms build --cache {cache.name} --sae {sae} --eps {eps:g}`, then reload.")
        st.stop()
    rep, xy, map_pairs = built
    df = pd.DataFrame(rep["interventions"]).set_index("variant")
    st.caption(rep["note"])
    st.dataframe(df, width="stretch", key="interventions_table")
    fig = go.Figure([go.Bar(x=df.index, y=df["DiM"], name="gap DiM"),
                     go.Bar(x=df.index, y=df["full_gallery_R@1"], name="R@1 full gallery"),
                     go.Bar(x=df.index, y=df["batched_R@1"], name="R@1 batched")])
    fig.update_layout(barmode="group", height=320, margin=dict(t=20))
    st.plotly_chart(fig, width="stretch", key="interventions_chart")
    st.markdown("**Joint map of the bimodal-only embeddings** (PCA; compare with the Modality gap page)")
    points = _point_table(str(cache.path))
    if len(map_pairs) == len(points) // 2:
        fig, info_map = figures.joint_map(xy, points)
        st.plotly_chart(fig, width="stretch", key="bimodal_map")
    else:
        st.caption(f"measured on a sample of {len(map_pairs)} pairs; the map is drawn for the full cache only")

else:  # Vector arithmetic
    from engine.atoms.arithmetic import edit_queries, search
    from engine.atoms.interventions import ood_score

    x_img, pair_ids = _pairs(str(cache.path))
    model = _model(str(cache.path), sae)
    c1, c2 = st.columns([1, 2])
    row = c1.number_input("Source image (row)", 0, len(pair_ids) - 1, 0, key="va_row")
    edit = c2.text_input("Edit text", value="blue", key="va_edit")
    views.image_grid(cache, [2 * int(pair_ids[row])], ["source"], cols=1)
    if edit:
        m = cache.manifest["model"]
        x_edit = _encoder(m["arch"], m["pretrained"]).encode_texts([edit])[0]
        keep = (table.sort_values("atom")["class"] == "bimodal").to_numpy()
        qs = edit_queries(model, D, model.bias.detach().cpu().numpy(), keep, x_img[row:row + 1], x_edit)
        for qname, q in qs.items():
            idx, sims = search(q, x_img, top=8, exclude=np.array([row]))
            st.markdown(f"**{qname}** — OOD score {float(ood_score(q, x_img)[0]):.4f} "
                        "(cosine distance to the 5th nearest real image; lower = more in-distribution)")
            views.image_grid(cache, 2 * pair_ids[idx[0]], [f"{s:.3f}" for s in sims[0]], cols=8)
