"""ELM Lab dashboard: navigation and the shared sidebar (store status, read-only banner, the link to
this view and its HTML report). Run with `elmlab up` (or `streamlit run app/streamlit_app.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import actions, current, frames, report, state, ui

# The tab icon is a file served by this server: a ":material/...:" icon is fetched from Google's CDN.
st.set_page_config(page_title="ELM Lab", page_icon=str(Path(__file__).with_name("icon.png")), layout="wide")

read_only = actions.read_only()
pages = [
    # The default page is served at "/" and has no path of its own, so it is the same page in every
    # mode: shared links such as /explore then work on a read-only dashboard too.
    st.Page("views/design.py", title="Design and queue", icon=":material/tune:", url_path="design", default=True),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:", url_path="runs"),
    st.Page("views/search.py", title="Search", icon=":material/search:", url_path="search"),
    st.Page("views/explore.py", title="Explore", icon=":material/scatter_plot:", url_path="explore"),
    st.Page("views/sweeps.py", title="Sweeps", icon=":material/stacked_line_chart:", url_path="sweeps"),
    st.Page("views/scaling.py", title="Scaling laws", icon=":material/trending_down:", url_path="scaling"),
    st.Page("views/run.py", title="Run detail and compare", icon=":material/description:", url_path="run"),
    st.Page("views/share.py", title="Share and export", icon=":material/share:", url_path="share"),
]
page = st.navigation(pages)

with st.sidebar:
    st.markdown("### ELM Lab")
    st.caption("How should a parameter budget be split between more neurons and more complex neurons?")
    if read_only:
        st.warning("Read-only dashboard: results are published here; queueing, cancel and retry are off.",
                   icon=":material/lock:")

    @st.fragment(run_every=5)
    def store_status() -> None:
        counts = frames.status_counts(state.runs())
        st.caption("Store: " + (" · ".join(f"{n} {s}" for s, n in counts.items() if n) or "empty"))

    store_status()

asked = ui.url_asked()
notes = st.container()  # above the page: what the address asked that the page could not show
current.begin(page.title, page.url_path)
page.run()
ui.url_notes(notes, asked)

with st.sidebar:
    st.divider()
    st.markdown("**Share this view**")
    url = current.share_url()
    st.code(url or "(the address of this page)", language=None, wrap_lines=True)
    st.caption("The link reproduces this page with its settings.")
    view = current.get()
    if view["figures"] or view["tables"]:
        stamp = state.token()[1]

        def _build() -> str:
            return report.build_report(view["title"], view["figures"], view["tables"], view["settings"],
                                       {"page": view["page"], "store state": stamp},
                                       current.public_url())

        st.download_button("Download this view as an HTML report", data=_build, mime="text/html",
                           file_name=f"elmlab-{view['page'] or 'view'}.html", key="download_report",
                           icon=":material/download:")
