"""geolens: Streamlit entry. A router only; every page lives in pages/."""
import streamlit as st

# (file, title, icon). Add a method page by adding one line.
PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/gap.py", "Modality gap", ":material/join_inner:"),
    ("pages/atoms.py", "Bimodal atoms", ":material/grain:"),
    ("pages/concepts.py", "Concepts (CRAFT)", ":material/hub:"),
    ("pages/geodesics.py", "Geodesics (EBM metrics)", ":material/route:"),
    ("pages/dvr.py", "Diversity vs. recognizability", ":material/draw:"),
]

st.set_page_config(page_title="geolens", layout="wide")
nav = st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0)) for i, (path, title, icon) in enumerate(PAGES)])
try:
    nav.run()
finally:  # after the page has put its view in the query string (also when it stopped early)
    from ui.links import copy_link

    copy_link()
