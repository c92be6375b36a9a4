"""Search: what a multi-fidelity search is doing, refreshing while it runs (app/search.py)."""

from __future__ import annotations

import math

import polars as pl
import streamlit as st

from app import current, search

st.title("Search")
found = search.searches()
if not found:
    st.info("No search yet. Queue one from the Design page (\"Find the optimum at this budget\") or with "
            "`elmlab sweep search`.", icon=":material/search:")
    st.stop()
by_id = {d.search_id: d for d in found}
chosen = st.selectbox("Search", list(by_id), key="search_id", bind="query-params",
                      format_func=lambda i: f"{i} ({'finished' if by_id[i].finished_at else 'running'})")
defn = by_id[chosen]
st.caption(f"{defn.task}, d_m {', '.join(map(str, defn.arms))}, seeds {', '.join(map(str, defn.seeds))}, "
           f"eta {defn.eta}, {defn.total_steps} steps per run"
           + (f", compute limit {defn.compute_limit:g} CPU-hours per budget" if defn.compute_limit else ""))


@st.fragment(run_every=None if defn.finished_at else 5)
def show() -> None:
    runs = search.search_runs(defn)
    info = search.summary(defn, runs)
    st.markdown("**Finished.**" if info["finished"] else "**Running**: this view refreshes every 5 s.")
    for g in info["groups"]:
        st.subheader(f"Budget {g['budget']:,.0f}")
        m = st.columns(3)
        m[0].metric("Runs", len(g["runs"]))
        m[1].metric("Stopped", len(g["stopped"]))
        left = "no limit" if g["limit_h"] is None else f"{max(0.0, g['limit_h'] - g['used_h']):.3g} CPU-h left"
        m[2].metric("Compute used", f"{g['used_h']:.3g} CPU-h", left)
        rung_rows = [{"rung (step)": r, "d_m": a, f"{g['signal']} at the rung": v[0], "se": v[1]}
                     for r, arms in g["rungs"].items() for a, v in arms.items()]
        st.caption(f"Rungs at steps {list(g['rungs'])} on the {g['signal']} signal.")
        if rung_rows:
            st.dataframe(pl.DataFrame(rung_rows), key=f"rungs_{g['budget']:g}", hide_index=True)
        table = pl.DataFrame(g["runs"]).with_columns(
            pl.col("reason").map_elements(search.pruned_reason, return_dtype=pl.String))
        st.dataframe(table, key=f"search_runs_{g['budget']:g}", hide_index=True)
        points, fit = search.iso_points(runs.filter(pl.col("budget") == g["budget"]), info["live"])
        fig = search.iso_figure(points, fit)
        st.plotly_chart(fig, key=f"search_iso_{g['budget']:g}")
        if fit is not None:
            lo, hi = (f"{v:.3g}" if math.isfinite(v) else "-" for v in fit.ci)
            st.caption(f"Optimum d_m {fit.optimum:.3g}, {int(100 * fit.ci_level)}% interval [{lo}, {hi}]; "
                       "hollow points are extrapolated, not finished.")
        current.add_figure(f"Search {defn.search_id} at {g['budget']:,.0f}", fig)


show()
