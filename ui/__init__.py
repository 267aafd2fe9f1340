"""App layer: streamlit helpers shared by pages (state, cached readers). The engine never imports this."""
