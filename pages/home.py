"""Home: the caches on disk with their provenance; the active cache for every page."""
import time

import pandas as pd
import streamlit as st

from engine.datasets.sources import resolve
from engine.default_model import TrainConfig, weights_path
from engine.embcache import list_caches
from ui.state import synced_select


@st.cache_data(ttl=10, show_spinner=False)
def cache_table() -> pd.DataFrame:
    rows = []
    for c in list_caches():
        m = c.manifest
        rows.append({"name": c.name, "pairs": m["n_pairs"], "skipped": m["n_skipped"], "dim": m["dim"],
                     "dataset": m["dataset"].get("source", "?"), "model": m["model"]["arch"],
                     "weights": str(m["model"].get("pretrained") or "random-init").rsplit("/", 1)[-1],
                     "MB": round(c.size_bytes() / 2**20, 2), "created": m["created"],
                     "artifacts": len(c.artifacts())})
    return pd.DataFrame(rows)


def build_default() -> None:
    """Train the default model if needed, then precompute the default Shapes cache, with progress."""
    from engine.default_model import default_spec
    from engine.encoders import Encoder
    from engine.precompute import precompute

    with st.status("Building the default Shapes cache", expanded=True) as status:
        bar = st.progress(0.0)
        t0 = time.time()

        def on_train(step, total):
            if step % 10 == 0 or step == total:
                bar.progress(step / total, text=f"training geolens-tiny: step {step}/{total}, {step / (time.time() - t0):.1f} steps/s")

        spec = default_spec(progress=on_train)

        def on_encode(done, total, rate):
            bar.progress(done / total, text=f"encoding: {done}/{total} pairs, {rate:.0f} pairs/s")

        res = precompute(resolve("shapes"), Encoder(spec), progress=on_encode)
        status.update(label=f"Built {res.cache.name}", state="complete")
    cache_table.clear()
    st.session_state["cache"] = res.cache.name


st.title("geolens")
st.caption("The geometry of learned representations: modality gap, bimodal atoms, concepts, geodesics, "
           "diversity vs recognizability — side by side, on real models.")
table = cache_table()
if table.empty:
    st.info("No embedding cache yet. Build the default one (trains the built-in CLIP on the Shapes world "
            f"{'— weights already on disk' if weights_path(TrainConfig()).exists() else 'first, a few minutes on CPU'}), "
            "or run `geolens precompute --dataset captions.csv --model ViT-B-32 --pretrained weights.safetensors`.")
    if st.button("Build the default cache", type="primary"):
        build_default()
        st.rerun()
else:
    active = synced_select("Active cache (used by every page)", list(table["name"]), key="cache")
    row = table[table["name"] == active].iloc[0]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Pairs", int(row["pairs"]))
    c2.metric("Skipped inputs", int(row["skipped"]))
    c3.metric("Dimension", int(row["dim"]))
    c4.metric("Size (MB)", float(row["MB"]))
    st.dataframe(table, hide_index=True, width="stretch")
    with st.expander("Provenance of the active cache"):
        st.json(next(c for c in list_caches() if c.name == active).manifest)
