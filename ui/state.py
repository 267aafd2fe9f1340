"""Shareable view state: values that live in both session state and the URL query string."""
from __future__ import annotations

from typing import Sequence, TypeVar

import streamlit as st

T = TypeVar("T")


def url_value(key: str, default: T | None = None) -> str | T | None:
    """The query-string value of ``key``, else ``default``."""
    return st.query_params.get(key, default)


def set_url(**values) -> None:
    """Put values in the query string (None removes a key), so a link reproduces the view."""
    for k, v in values.items():
        if v is None:
            st.query_params.pop(k, None)
        elif st.query_params.get(k) != str(v):
            st.query_params[k] = str(v)


def synced_select(label: str, options: Sequence[T], key: str, default: T | None = None, *, sidebar=False, fmt=str, **kw) -> T | None:
    """A selectbox whose choice is kept in session state and in the URL under ``key``."""
    options = list(options)
    if not options:
        return None
    wanted = url_value(key)
    by_str = {str(o): o for o in options}
    if wanted in by_str:
        index = options.index(by_str[wanted])
    elif default in options:
        index = options.index(default)
    else:
        index = 0
    where = st.sidebar if sidebar else st
    choice = where.selectbox(label, options, index=index, key=f"_sel_{key}", format_func=fmt, **kw)
    set_url(**{key: choice})
    st.session_state[key] = choice
    return choice
