"""The small core every method uses the same way: artifacts, progress, registries, assets.

- ``artifacts``: one store for everything derived from a cache or trained by the engine.
- ``progress``: one progress type that feeds tqdm, ``st.progress`` and the job runner.
- ``registry``: name-keyed registries whose names are CLI choices, dropdowns and key parts.
- ``assets``: trained weights shipped under ``assets/`` with a manifest of how they were made.
"""
