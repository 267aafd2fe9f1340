"""geolens engine: all computation behind the dashboard. Never imports streamlit."""

ENGINE_VERSION = "0.2.0"
"""Part of every cache and artifact key. Bump it when a change alters what any stored result holds
(0.2.0: content keys for weights, images and drawn characters; artifacts beside the cache).
A single kind whose results change bumps its own revision instead (e.g. ``METRICS_VERSION``),
passed as the ``version`` of ``engine.core.artifacts.artifact_key``."""
