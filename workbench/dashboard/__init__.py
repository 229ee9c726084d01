"""The Streamlit dashboard: thin pages over the library.

Start it with ``workbench dashboard`` (or ``streamlit run app.py``). `app.py` holds
the model picker, the prompt box and the page list; `common.py` the shared pieces
(cached model, cached results, errors shown in the page, the results root); each
file in `views/` is one page and calls the library for every number it shows (the
folder is not called `pages/`: Streamlit would list such a folder's files on its own).
"""
