""""Copy link to this view": the page's URL with the query parameters the page keeps its view in.

Pages keep their view (cache, run, selected item, options) in the query string (``ui.state``),
so the current URL reproduces the view; this shows it in a code box whose copy button copies it.
"""
from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st


def view_url(base: str | None = None) -> str:
    """The current page's URL with the current query parameters (``base``: the page URL; default
    the browser's, from ``st.context.url``)."""
    if base is None:
        try:
            base = st.context.url or ""
        except Exception:  # outside a browser session (AppTest): a relative link
            base = ""
    parts = urlsplit(base)
    params = {k: st.query_params.get_all(k)[-1] for k in st.query_params}
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(sorted(params.items())), ""))


def copy_link(where=None) -> None:
    """The link box, in the sidebar by default."""
    where = where or st.sidebar
    with where.expander("Copy link to this view", icon=":material/link:"):
        st.code(view_url(), language=None, wrap_lines=True)
        st.caption("Opens this page with the same choices (the copy button is at the box's right).")
