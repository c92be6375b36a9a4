"""The ELM Lab dashboard (Streamlit + Plotly). `streamlit run app/streamlit_app.py`, or `elmlab up`.

    streamlit_app.py   navigation (st.navigation) and the shared sidebar: store status, read-only
                       banner, the link to this view, the HTML report of this view
    views/             one short script per page: design, runs, explore, sweeps, scaling, run, share (not
                       "pages/": Streamlit takes that folder for its older multipage layout and
                       bypasses st.navigation)
    state.py           the one cached data layer (st.cache_data): runs, fits, records, task sizes,
                       broker health; the runs keyed on Store.state_token(), the fits on what they fit
    frames.py          pure work on the runs frame (selection, counts, the Runs table)
    fits.py            pure fits on seed-collapsed runs; each gives its result or NoFit(reason)
    data.py            pure design arithmetic (a task, budget and allocation -> the exact configuration)
    figures.py         pure Plotly builders: frame in, figure out
    sweep_figures.py   pure builders of the Sweeps page: parallel coordinates, importance, best so far
    curves.py          learning curves as frames, stored or live (the progress channel), smoothing
    importance.py      parameter importance: a main-effects functional ANOVA (omega squared)
    annotations.py     tags and a note per run, in <store>/annotations.json
    text.py            values to text and back (human, duration, plain, parse_ints), column labels
    current.py         the current view (title, figures, tables, settings) for the link and the report
    actions.py         every mutating action (queue, cancel, retry, import) behind one read-only guard
    report.py          self-contained interactive HTML report
    ui.py              widgets shared by several pages (first screen, broker banner, task picker)
"""
