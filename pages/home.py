"""Home: the caches on disk, with provenance; pick the active cache for every page."""
import streamlit as st

from engine import store

st.title("geolens")
st.caption("The geometry of learned representations: five methods, side by side.")
files = store.list_files()
st.write(f"{len(files)} cache file(s) in `{store.cache_root()}`")
