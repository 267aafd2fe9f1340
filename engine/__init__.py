"""geolens engine: all computation behind the dashboard. Never imports streamlit."""

ENGINE_VERSION = "0.1.0"
