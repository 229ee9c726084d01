"""The workbench dashboard. Start it with `workbench dashboard` (or `streamlit run app.py`).

All analysis lives in the `workbench` library; the pages are in workbench/dashboard/.
"""

from workbench.dashboard.app import main

main()
