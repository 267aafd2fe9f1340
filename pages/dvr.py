"""Diversity vs. recognizability: where one-shot generators sit against humans (Boutin et al. 2022)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from engine.dvr import evaluate, generators, results, samples
from engine.dvr.networks import load_critics
from engine.paths import check_data_folder, data_root
from ui.state import set_url, synced_select

FAMILY_COLORS = {"human": "#d62728", "vae": "#1f77b4", "reference": "#7f7f7f", "gan": "#2ca02c", "diffusion": "#ff7f0e",
                 "external": "#9467bd"}


@st.cache_data(show_spinner=False)
def _report(ref: str, token: tuple) -> dict:
    return results.report(Path(ref))


@st.cache_data(show_spinner=False)
def _frames(ref: str, token: tuple, n_bins: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    r = Path(ref)
    pc = results.per_class(r)
    return results.summary(r), results.class_distances(r), results.originality_curve(r, n_bins), sorted(pc["class"].unique())


@st.cache_data(show_spinner=False)
def _montage(paths: tuple[str, ...], cols: int):
    return samples.montage(list(paths), cols)


@st.cache_resource(show_spinner=False)
def _critics(folder: str):
    return load_critics(folder)


def _token(ref: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns) for p in [ref, *results.runs_for(ref)])


def _scatter(s: pd.DataFrame, selected: str | None) -> go.Figure:
    fig = go.Figure()
    for fam, grp in s[s["id"] != results.HUMAN].groupby("family"):
        fig.add_trace(go.Scatter(
            x=grp["diversity"], y=grp["recognizability"], mode="markers", name=fam, customdata=grp[["id", "params"]],
            marker=dict(size=[16 if i == selected else 11 for i in grp["id"]], color=FAMILY_COLORS.get(fam, "#8c564b"),
                        line=dict(width=[3 if i == selected else 0 for i in grp["id"]], color="black")),
            error_x=dict(array=grp["diversity_std"], thickness=0.6), error_y=dict(array=grp["recognizability_std"], thickness=0.6),
            hovertemplate="<b>%{customdata[0]}</b><br>params %{customdata[1]}<br>diversity %{x:.4g}<br>recognizability %{y:.3f}<extra></extra>"))
    sweeps = s[(s["sweep"] != "") & s["sweep_value"].notna()]
    for (run, gen, sweep), grp in sweeps.groupby(["run", "generator", "sweep"]):
        grp = grp.sort_values("sweep_value")
        if len(grp) < 2:
            continue
        fig.add_trace(go.Scatter(
            x=grp["diversity"], y=grp["recognizability"], mode="lines+markers+text", showlegend=True,
            name=f"{gen} sweep: {sweep} ↑", text=[f"{sweep}={v:g}" for v in grp["sweep_value"]], textposition="top center",
            line=dict(dash="dot", color=FAMILY_COLORS.get(grp["family"].iloc[0], "#8c564b")), hoverinfo="skip",
            marker=dict(symbol="arrow", size=12, angleref="previous", color=FAMILY_COLORS.get(grp["family"].iloc[0]))))
        xs, ys = grp["diversity"].tolist(), grp["recognizability"].tolist()
        for i in range(1, len(xs)):  # one arrow per step of the sweep, in the direction the parameter grows
            fig.add_annotation(x=xs[i], y=ys[i], ax=xs[i - 1], ay=ys[i - 1], xref="x", yref="y", axref="x", ayref="y",
                               showarrow=True, arrowhead=3, arrowsize=1.3, arrowwidth=1.6, text="",
                               arrowcolor=FAMILY_COLORS.get(grp["family"].iloc[0], "#8c564b"))
    h = s[s["id"] == results.HUMAN]
    fig.add_trace(go.Scatter(x=h["diversity"], y=h["recognizability"], mode="markers", name="humans", customdata=h[["id", "params"]],
                             marker=dict(symbol="star", size=22, color=FAMILY_COLORS["human"], line=dict(width=1, color="black")),
                             hovertemplate="<b>humans</b><br>diversity %{x:.4g}<br>recognizability %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title="diversity (SimCLR feature std, mean over classes)", yaxis_title="recognizability (20-way 1-shot)",
                      height=520, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.15))
    return fig


def _evaluate_form(ref: Path, meta: dict) -> None:
    if st.session_state.get("dvr_last_eval"):
        st.success(f"Evaluated and cached as `{st.session_state['dvr_last_eval']}`; its models are in the plots above.")
    with st.form("dvr_eval"):
        st.markdown("**Evaluate a samples folder** — layout `<root>/<model>/<class>/exemplar.png` plus the samples "
                    "(`*.png`, 20 per class in the paper); optional `<model>/model.json` with `family`, `sweep`, `params`.")
        st.caption(f"Only folders under the data root `{data_root()}` are read (set `GEOLENS_DATA_ROOT` to change it); "
                   "a relative path is taken from there.")
        folder = st.text_input("Samples folder (path on the server)", key="dvr_folder")
        go_ = st.form_submit_button("Evaluate")
    if not go_:
        return
    if not folder.strip():
        st.error("Enter the path of a samples folder.")
        return
    try:
        folder_path = check_data_folder(folder)
    except (ValueError, FileNotFoundError) as exc:
        st.error(str(exc))
        return
    bar = st.progress(0.0, text="reading samples…")
    t0 = time.perf_counter()

    def tick(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        bar.progress(done / total, text=f"{done}/{total} images · {rate:.0f} items/s")

    try:
        out = evaluate.evaluate_folder(folder_path, ref, _critics(meta["critics_folder"]), progress=tick)
    except (ValueError, FileNotFoundError) as exc:
        st.error(str(exc))
        return
    bar.progress(1.0, text="done")
    st.session_state["dvr_last_eval"] = out.name
    st.rerun()  # redraw every plot with the new models


def main() -> None:
    st.title("Diversity vs. recognizability")
    st.caption("One-shot generation (Boutin et al. 2022): every model gets one exemplar per test class and draws 20 samples; "
               "diversity = spread of the samples in SimCLR space, recognizability = 20-way 1-shot accuracy of a "
               "prototypical net on them (500 fixed episodes per class). Humans are the real drawings.")
    with st.expander("Registered generators (the built-in families and their swept parameter)"):
        st.markdown("| name | family | swept | what |\n|---|---|---|---|\n" + "\n".join(
            f"| `{n}` | {e.family} | {e.sweep or '—'} | {e.about} |" for n, e in generators.GENERATORS.items()))
        st.caption("Trained families work at 32×32; their samples are upsampled to 50×50 and thresholded at 0.5. "
                   "Paper (Boutin et al. 2022): GAN-like models sit at low diversity / high recognizability, VAE-like "
                   "models at the opposite corner, guided diffusion closest to humans.")
    refs = results.list_refs()
    if not refs:
        from ui.jobs import pending_or_ready  # the default build's progress here, or a button that starts it

        pending_or_ready("dvr", False, hint="Or run `geolens dvr build --omniglot PATH` for real Omniglot.",
                         recheck=lambda: bool(results.list_refs()))
        return
    ref = synced_select("Reference (data + critics)", refs, key="dvr_ref", sidebar=True, fmt=lambda p: p.stem)
    meta = evaluate.read_meta(ref)
    st.sidebar.caption(f"source: {meta.get('source')} · {meta.get('n_classes')} test classes · critics "
                       f"{meta.get('critics_key')} · training s: {json.dumps({k: round(v, 1) for k, v in meta.get('train_seconds', {}).items()})}")
    n_bins = st.sidebar.slider("Originality bins", 3, 15, 8, key="dvr_bins")
    token = _token(ref)
    rep = _report(str(ref), token)
    s, dist, curve, classes = _frames(str(ref), token, n_bins)

    ids = s["id"].tolist()
    models = [i for i in ids if i != results.HUMAN]
    if not models:
        from ui.jobs import building, pending_or_ready

        if building("dvr"):  # the reference is built; the default build still draws and scores the models
            pending_or_ready("dvr", False, hint="The reference is ready; the generators' samples come next.",
                             recheck=lambda: _token(ref) != token)
            return
    fig = _scatter(s, st.session_state.get("dvr_model"))
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="dvr_scatter", width="stretch")
    points = ((event or {}).get("selection") or {}).get("points", [])
    clicked = next((p["customdata"][0] for p in points if p.get("customdata") and p["customdata"][0] in models), None)
    if clicked and clicked != st.session_state.get("_dvr_last_click"):  # a new click, not a stale selection
        st.session_state["_dvr_last_click"] = clicked
        set_url(dvr_model=clicked)
        st.session_state.pop("_sel_dvr_model", None)

    fmap = rep.get("family_map") or {}
    if fmap.get("families"):
        words = {"gan_below_vae": "GAN-like at lower diversity and higher recognizability than VAE-like",
                 "vae_off_human": "VAE-like at higher diversity or lower recognizability than humans",
                 "diffusion_closest": "guided diffusion closest to humans"}
        st.markdown("**The paper's map on these data** (family means over each sweep; built-in run): " + "; ".join(
            f"{words[k]}: {'—' if v is None else ('yes' if v else 'no')}" for k, v in fmap["checks"].items()))
        st.caption(" · ".join(f"{f}: diversity {v['diversity']:.3f}, recognizability {v['recognizability']:.3f}, "
                              f"closest to humans {v['min_distance_to_human']:.3f}" for f, v in fmap["families"].items()))

    left, right = st.columns([1, 1])
    with left:
        model = synced_select("Model (or click a point)", models, key="dvr_model")
    with right:
        cls = synced_select("Class", classes, key="dvr_class")
    if model and cls:
        row = s[s["id"] == model].iloc[0]
        ex, smp = samples.class_images(Path(row["folder"]), cls)
        human = results.drawings(ref, cls)
        c1, c2, c3 = st.columns([1, 3, 3])
        c1.image(_montage(tuple(str(p) for p in ([ex] if ex else human[:1])), 1), caption="exemplar", width=110)
        c2.image(_montage(tuple(map(str, smp)), 5), caption=f"{model}: {len(smp)} samples", width="stretch")
        c3.image(_montage(tuple(human[1:]), 5), caption=f"humans: {len(human) - 1} drawings", width="stretch")

    st.subheader("Every configuration (mean ± std over classes)")
    table = pd.DataFrame([{"id": results.HUMAN, "family": "human", "sweep": "", "sweep_value": None,
                           **{k: rep["human"][k] for k in ("diversity", "diversity_std", "recognizability", "recognizability_std", "n_classes")},
                           "distance_to_human": 0.0}] + rep["models"])
    st.dataframe(table, hide_index=True, width="stretch", key="dvr_table")

    a, b = st.columns(2)
    with a:
        st.subheader("Distance to humans per family")
        st.caption("Per class: hypot((div − div_human) / mean div_human, rec − rec_human).")
        st.plotly_chart(px.strip(dist, x="family", y="distance", color="family", hover_data=["id", "class"],
                                 color_discrete_map=FAMILY_COLORS), width="stretch", key="dvr_dist")
    with b:
        st.subheader("Recognizability vs. originality")
        st.caption("Episodes binned by their query's distance to the exemplar in SimCLR space (features / global σ).")
        c = curve[curve["count"] > 0]
        st.plotly_chart(px.line(c, x="mid", y="recognizability", color="id", markers=True, hover_data=["count", "lo", "hi"],
                                labels={"mid": "originality"}), width="stretch", key="dvr_curve")

    _evaluate_form(ref, meta)


main()
