"""Home: one card per method (live figure, headline numbers, state, link), the jobs, the caches."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine.core import jobs, names
from engine.embcache import list_caches
from ui import jobs as job_ui
from ui.format import DASH, num
from ui.state import synced_select

FIG_HEIGHT = 190
CARD_POLL_S = 5.0
"""seconds between refreshes of a card's state (five cards on one page: kept light for the server)"""


def _small(fig: go.Figure) -> go.Figure:
    fig.update_layout(height=FIG_HEIGHT, margin=dict(l=4, r=4, t=4, b=4), showlegend=False,
                      xaxis_title=None, yaxis_title=None)
    return fig


# ----------------------------------------------------------------------------- per-method reads (cached)
@st.cache_data(show_spinner=False, max_entries=32)
def _stage_outputs(stage: str, stamp: tuple) -> list[str]:
    return names.default_stage_outputs(stage)


def stage_outputs(stage: str) -> list[str]:
    return _stage_outputs(stage, names.store_stamp())


@st.cache_data(show_spinner=False, max_entries=4)
def gap_card(stamp: tuple) -> dict:
    from engine.gap import metrics
    from engine.gap.report import find_report, load_points

    cache = names.default_shapes_caches()[0]
    rep = find_report(cache)
    pts = load_points(cache)
    u = metrics.gap_direction(pts.img, pts.txt)
    return {"label": names.cache_label(cache.manifest), "name": cache.name,
            "numbers": [("DiM", num(rep["gap"]["DiM"] if rep else None, ".4f"), "centroid distance ‖mean(image) − mean(text)‖"),
                        ("W (OT)", num(rep["gap"]["W"] if rep else None, ".4f"), "optimal-transport cost between the modalities"),
                        ("Probe acc.", num(rep["probe"]["accuracy"] if rep else None, ".3f"), "linear probe telling image from text")],
            "note": None if rep else "W and the probe are computed when the page first opens (then stored).",
            "proj": (metrics.gap_projection(pts.img, u), metrics.gap_projection(pts.txt, u))}


@st.cache_data(show_spinner=False, max_entries=4)
def atoms_card(stamp: tuple) -> dict:
    from engine.sae.store import list_saes

    cache = names.default_shapes_caches()[0]
    saes = list_saes(cache)
    saes = saes.assign(beta=saes["beta"].astype(float)).sort_values("beta")
    aligned, plain = saes.iloc[-1], saes.iloc[0]
    classes = ["bimodal", "image", "text", "dead"]
    counts = {f"β={float(r['beta']):g}": [int(r.get(c, 0) or 0) for c in classes] for _, r in saes.iterrows()}
    return {"label": f"{names.cache_label(cache.manifest)} · {len(saes)} SAEs",
            "numbers": [("Bimodal atoms", num(aligned.get("bimodal"), "d"), f"aligned SAE (β={float(aligned['beta']):g}), of {aligned['atoms']} atoms"),
                        ("EV aligned", num(_f(aligned.get("ev")), ".3f"), "explained variance of the aligned SAE"),
                        ("EV plain", num(_f(plain.get("ev")), ".3f"), "explained variance of the plain SAE (β=0)")],
            "classes": classes, "counts": counts}


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@st.cache_data(show_spinner=False, max_entries=4)
def concepts_card(stamp: tuple) -> dict:
    from engine.concepts import cache

    entry = next(c for c in cache.list_caches() if c["model"] == "fmnist-cnn" and c["class_name"] == "Sneaker")
    rep = cache.report(entry["path"])
    fid = rep.get("fidelity_auc", {})
    return {"label": f"{rep['model']} · {rep['class']} · {rep['n_images']:,} images",
            "numbers": [("Concepts", num(rep["n_concepts"], "d"), "NMF concepts of the class"),
                        ("NMF error", num(rep["reconstruction_error"]["crops"], ".3f"), "relative reconstruction error on crops"),
                        ("Deletion AUC", num(fid.get("deletion", {}).get("sobol"), ".3f"),
                         "mean class probability while deleting concepts by Sobol importance (lower is better)")],
            "sobol": rep["importance"]["sobol_total"]}


@st.cache_data(show_spinner=False, max_entries=4)
def geodesics_card(stamp: tuple) -> dict:
    from engine.geodesics import pipeline

    path = pipeline.list_runs("ucg")[0]
    rep = pipeline.report_from_cache(path)
    ms = list(rep["metrics"])
    best = next((m for m in ms if "ebm" in m.lower() or m.startswith("G_E")), ms[0])
    e = rep["metrics"][best]
    ids = list(range(min(6, rep["n_pairs"])))
    paths = {m: pipeline.load_paths(path, m, ids) for m in ms[:4]}
    return {"label": names.geodesic_run_label(path),
            "numbers": [(f"p_M {best}", num(e.get("p_M"), ".3f"), "mean density along the geodesics (higher is better)"),
                        ("paper", num(e.get("p_M (paper)"), ".3f"), "the paper's value (— where it reports none)"),
                        ("Metrics", num(len(ms), "d"), ", ".join(ms))],
            "paths": paths}


@st.cache_data(show_spinner=False, max_entries=4)
def dvr_card(stamp: tuple) -> dict:
    from engine.dvr import results

    rep = results.report()
    models = pd.DataFrame(rep["models"])
    best = models.sort_values("distance_to_human").iloc[0] if len(models) else None
    return {"label": f"{rep.get('source') or DASH} · {rep.get('n_test_classes') or DASH} test classes · {len(models)} models",
            "numbers": [("Human diversity", num(rep["human"]["diversity"], ".3f"), "spread of human drawings in SimCLR space"),
                        ("Human recogn.", num(rep["human"]["recognizability"], ".3f"), "1-shot accuracy on human drawings"),
                        ("Closest model", DASH if best is None else str(best["id"]),
                         "" if best is None else f"distance to humans {num(best['distance_to_human'])}")],
            "points": models[["id", "family", "diversity", "recognizability"]].to_dict("records"), "human": rep["human"]}


def gap_fig(d: dict) -> go.Figure:
    from engine.gap import figures

    return _small(figures.gap_histogram(*d["proj"], bins=40))


def atoms_fig(d: dict) -> go.Figure:
    fig = go.Figure([go.Bar(name=k, x=d["classes"], y=v) for k, v in d["counts"].items()])
    return _small(fig.update_layout(barmode="group", showlegend=True))


def concepts_fig(d: dict) -> go.Figure:
    v = np.asarray(d["sobol"])
    return _small(go.Figure(go.Bar(x=[f"c{i}" for i in range(len(v))], y=v, marker_color="#8E44AD")))


def geodesics_fig(d: dict) -> go.Figure:
    fig = go.Figure()
    colours = ["#4285F4", "#34A853", "#EA4335", "#FBBC05"]
    for i, (m, ps) in enumerate(d["paths"].items()):
        for j, p in enumerate(ps):
            fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="lines", line=dict(color=colours[i % 4], width=1.5),
                                     name=m, showlegend=j == 0))
    return _small(fig.update_layout(yaxis=dict(scaleanchor="x")))


def dvr_fig(d: dict) -> go.Figure:
    pts = pd.DataFrame(d["points"])
    fig = go.Figure(go.Scatter(x=pts["diversity"], y=pts["recognizability"], mode="markers", text=pts["id"],
                               marker=dict(size=7, color="#4285F4"), name="models"))
    fig.add_trace(go.Scatter(x=[d["human"]["diversity"]], y=[d["human"]["recognizability"]], mode="markers",
                             marker=dict(size=12, color="#EA4335", symbol="star"), name="humans"))
    return _small(fig)


# (stage, title, page, one line, data, figure)
METHODS = [
    ("shapes", "Modality gap", "pages/gap.py", "How far apart images and captions sit, and how well they retrieve each other.", gap_card, gap_fig),
    ("saes", "Bimodal atoms", "pages/atoms.py", "SAE atoms that fire on both modalities carry meaning; unimodal ones carry the gap.", atoms_card, atoms_fig),
    ("concepts", "Concepts (CRAFT)", "pages/concepts.py", "Concepts of a class, their importance, and the strategic cluster graph.", concepts_card, concepts_fig),
    ("geodesics", "Geodesics (EBM metrics)", "pages/geodesics.py", "Shortest paths under metrics from an energy-based model.", geodesics_card, geodesics_fig),
    ("dvr", "Diversity vs. recognizability", "pages/dvr.py", "One-shot drawing models against humans.", dvr_card, dvr_fig),
]


def state_of(stage: str) -> tuple[str, jobs.Job | None]:
    """('ready' | 'building (…)' | 'queued' | 'failed: …' | 'not built', its latest job)."""
    job = job_ui.stage_job(stage)
    if stage_outputs(stage):
        return "ready", job
    if job is not None and (job.active or job.state == "failed"):
        return job.status_text(), job
    return "not built", job


@st.fragment(run_every=CARD_POLL_S)
def card_state(stage: str, was_ready: bool) -> None:
    """The card's state line, refreshed live; the whole page reruns when the stage becomes ready."""
    state, job = state_of(stage)
    if (state == "ready") != was_ready:
        st.rerun(scope="app")
    icon = {"ready": ":green[●]", "not built": ":gray[○]"}.get(state, ":orange[◐]" if not state.startswith("failed") else ":red[●]")
    st.markdown(f"{icon} **{state}**")
    if job is not None and job.state == "running":
        st.progress(job.fraction or 0.0)
        st.caption(job.detail_text())
    elif state == "not built" or state.startswith("failed"):
        st.button("Build", key=f"home_build_{stage}", help=f"queue `{stage}` as a background job",
                  on_click=job_ui.start, args=(stage,))


def card(stage: str, title: str, page: str, blurb: str, data_fn, fig_fn) -> None:
    with st.container(border=True):
        st.markdown(f"#### {title}")
        st.caption(blurb)
        ready = bool(stage_outputs(stage))
        card_state(stage, ready)
        if ready:
            try:
                d = data_fn(names.store_stamp())  # cached until a cache or artifact changes
            except Exception as exc:  # a card must never take Home down: say what failed
                st.warning(f"Could not read its report: {exc}")
            else:
                st.caption(d["label"], help=d.get("name"))
                cols = st.columns(len(d["numbers"]))
                for col, (label, value, help_) in zip(cols, d["numbers"]):
                    col.metric(label, value, help=help_ or None)
                if d.get("note"):
                    st.caption(d["note"])
                st.plotly_chart(fig_fn(d), width="stretch", key=f"home_fig_{stage}",
                                config={"displayModeBar": False, "staticPlot": True})
        st.page_link(page, label=f"Open {title}", icon=":material/arrow_forward:")


@st.fragment(run_every=job_ui.POLL_S)
def jobs_fragment() -> None:
    job_ui.jobs_panel()


@st.cache_data(show_spinner=False, max_entries=4)
def cache_table(stamp: tuple) -> pd.DataFrame:
    caches = list_caches()
    labels = names.cache_labels(caches)
    rows = []
    for c in caches:
        m = c.manifest
        rows.append({"cache": labels[c.name], "file": c.name, "pairs": m["n_pairs"], "skipped": m["n_skipped"],
                     "dim": m["dim"], "MB": round(c.size_bytes() / 2**20, 2), "created": m["created"],
                     "artifacts": len(c.artifacts())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the page
st.title("geolens")
st.caption("The geometry of learned representations: modality gap, bimodal atoms, concepts, geodesics, "
           "diversity vs recognizability — side by side, on real models.")
missing = [m[0] for m in METHODS if not stage_outputs(m[0])]
if missing:
    active = {j.name for j in jobs.list_jobs(jobs.ACTIVE)}
    todo = [s for s in missing if s not in active]
    c1, c2 = st.columns([3, 1])
    c1.info(f"{len(missing)} of {len(METHODS)} methods are not built yet"
            + (f"; {len(missing) - len(todo)} building in the background." if len(todo) < len(missing) else ".")
            + " Every page works as soon as its own build finishes.")
    if todo and c2.button("Build all missing", type="primary", key="home_build_all"):
        jobs.submit_defaults(todo)
        jobs.ensure_runner()
        st.rerun()

for row in (METHODS[:3], METHODS[3:]):
    cols = st.columns(3)
    for col, m in zip(cols, row):
        with col:
            card(*m)

with st.expander("Jobs", expanded=bool(missing), icon=":material/pending_actions:"):
    jobs_fragment()

st.subheader("Embedding caches")
table = cache_table(names.store_stamp())
if table.empty:
    st.caption("No embedding cache yet: the Modality gap build makes the default one, or encode your own pairs with "
               "`geolens precompute --dataset captions.csv --model ViT-B-32 --pretrained weights.safetensors`.")
else:
    label_of = dict(zip(table["file"], table["cache"]))
    active = synced_select("Active cache (used by every page)", list(table["file"]), key="cache",
                           fmt=lambda n: label_of.get(n, n), help="dataset · model · pairs; the file name is below")
    row = table[table["file"] == active].iloc[0]
    st.caption(f"file `{active}`", help="the cache's file name: its dataset, model and content hash")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Pairs", int(row["pairs"]))
    c2.metric("Skipped inputs", int(row["skipped"]))
    c3.metric("Dimension", int(row["dim"]))
    c4.metric("Size (MB)", float(row["MB"]))
    st.dataframe(table, hide_index=True, width="stretch", column_config={"file": st.column_config.TextColumn(help="file name with content hash")})
    with st.expander("Provenance of the active cache"):
        st.json(next(c for c in list_caches() if c.name == active).manifest)
