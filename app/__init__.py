"""The ELM Lab dashboard (Streamlit + Plotly). `streamlit run app/streamlit_app.py`, or `elmlab up`.

    streamlit_app.py   navigation (st.navigation) and the shared sidebar: store status, read-only
                       banner, the link to this view, the HTML report of this view
    views/             one short script per page: design, runs, explore, scaling, run, share (not
                       "pages/": Streamlit takes that folder for its older multipage layout and
                       bypasses st.navigation)
    data.py            pure data work on run frames (selection, seeds, fits, design arithmetic)
    figures.py         pure Plotly builders: frame in, figure out
    state.py           cached data access keyed on Store.state_token(), settings, the current view
    actions.py         every mutating action (queue, cancel, retry, import) behind one read-only guard
    report.py          self-contained interactive HTML report
    ui.py              widgets shared by several pages (first screen, broker banner, task picker)
"""
