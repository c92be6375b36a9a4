"""Pieces of page shared by several pages: the first screen of an empty store, the broker banner,
the task and metric pickers, links to runs, and the outcome of an action."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
import streamlit as st
from pydantic import ValidationError

from app import actions, frames, state, text

NOTE = {"delta_color": "off", "delta_arrow": "off"}  # st.metric's delta used as a plain note
RUN_PAGE = "views/run.py"
RUNS_PAGE = "views/runs.py"
DESIGN_PAGE = "views/design.py"


def explain(exc: Exception) -> str:
    """A one-line reason for an invalid choice (pydantic's errors name their field)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def run_action(what: str, fn: Callable[[], Any]) -> Any:
    """Run a mutating action and keep its outcome for the next rerun (flash); None on failure."""
    try:
        out = fn()
    except actions.ReadOnlyError as exc:
        flash("error", str(exc))
    except ValueError as exc:
        flash("error", f"{what}: {explain(exc)}")
    except (ImportError, RuntimeError, OSError) as exc:  # BrokerUnavailable is a RuntimeError
        flash("error", f"{what}: the queue is unreachable ({type(exc).__name__}: {exc}). Start it with "
                       "`elmlab up`; stored runs stay browsable.")
    else:
        return out
    return None


def flash(kind: str, message: str, run_ids: Sequence[str] = ()) -> None:
    st.session_state["_flash"] = (kind, message, list(run_ids))


def show_flash() -> None:
    item = st.session_state.pop("_flash", None)
    if not item:
        return
    kind, message, run_ids = item
    getattr(st, kind)(message)
    if run_ids:
        st.page_link(RUNS_PAGE, label=f"Watch {len(run_ids)} run(s) on the Runs page", icon=":material/monitoring:")


def first_screen(where: str) -> None:
    """What to do first on an empty store (no blank charts)."""
    st.info("**No runs in the store yet.** ELM Lab asks how a fixed parameter budget should be split between "
            "more neurons (N) and more complex neurons (k_e) or more connections (k_c). Start with data:")
    if actions.read_only():
        st.write("This dashboard is read-only: it publishes the runs of its store, and this store is empty.")
        return
    cols = st.columns(3 if actions.demo_available() else 2)
    if cols[0].button("Import the published enwik8 sweep", key=f"{where}_import_reference", type="primary",
                      help="The reference's 14 runs at 3.5M parameters (one seed each), read-only."):
        n = run_action("Import", lambda: actions.import_reference(state.store()))
        if n is not None:
            flash("success", f"Imported the published sweep ({n} runs).")
        st.rerun()
    f = actions.FIRST_SWEEP
    label = "Queue a first iso-budget sweep (small preset, bundled corpus)"
    if cols[1].button(label, key=f"{where}_first_sweep",
                      help=f"{len(f['d_m'])} runs at {text.human(f['budget'])} parameters, d_m in {list(f['d_m'])}, "
                           "about a minute each on a laptop CPU."):
        ids = run_action("Queue", actions.queue_first_sweep)
        if ids:
            flash("success", f"Queued {len(ids)} runs.", ids)
        st.rerun()
    if len(cols) == 3 and cols[2].button("Load the demo results", key=f"{where}_demo",
                                         help="Iso-budget sweeps on the bundled corpus, run with ELM Lab."):
        n = run_action("Load demo", lambda: actions.load_demo(state.store()))
        if n is not None:
            flash("success", f"Loaded {n} demo records.")
        st.rerun()
    st.page_link(DESIGN_PAGE, label="Or design your own run or sweep", icon=":material/tune:")


def broker_banner(health: dict[str, Any]) -> None:
    """The broker is down: say so, unless this dashboard is read-only (it queues nothing, so the broker
    is none of its business: a fresh read-only home has none)."""
    if health.get("broker_ok") or actions.read_only():
        return
    st.error(
        f"**The broker is unreachable** ({health.get('error') or 'no answer'}). Queueing, cancel and retry "
        "wait until it is back (`elmlab up` starts it, with a worker); everything stored stays browsable.",
        icon=":material/cloud_off:",
    )


def health_metrics(health: dict[str, Any]) -> None:
    """Training workers (the recorder, which only writes results, is not counted), the queued runs'
    messages waiting in the broker's train and gpu queues (the messages of cancelled runs, which
    stay until a worker takes and drops them, counted apart), and the broker."""
    names = health.get("workers") or []
    workers = [w for w in names if not w.startswith("recorder")]
    queues = health.get("queues") or {}
    known = [v for q, v in queues.items() if q != "results" and isinstance(v, int)]
    stale_by_queue = health.get("stale") or {}
    stale = sum(v for v in stale_by_queue.values() if isinstance(v, int))
    unsplit = [q for q, v in queues.items() if q != "results" and v and not isinstance(stale_by_queue.get(q), int)]
    c = st.columns(3)
    c[0].metric("training workers", len(workers), "recorder up" if health.get("recorder") else "no recorder",
                help=", ".join(names) or "none answered", **NOTE)
    c[1].metric("runs waiting in broker", max(0, sum(known) - stale) if known else "-",
                f"+{stale} cancelled, to be dropped" if stale else None,
                help="Messages of queued runs waiting in the train and gpu queues. A cancelled run's message "
                     "stays there until a worker takes it and drops it; those are counted apart"
                     + (f" (not in {', '.join(unsplit)}: too many messages to read)" if unsplit else "") + ". "
                     + ", ".join(f"{k}: {'?' if v is None else v}" for k, v in queues.items()), **NOTE)
    c[2].metric("broker", "up" if health.get("broker_ok") else "down", health.get("mode"), **NOTE)


def annotation_editor(run_id: str, row: dict[str, Any]) -> None:
    """Tags and a note for one run (the first selected); read-only dashboards show them, unedited."""
    with st.expander(f"Tags and note: {run_id}", expanded=bool(row.get("tags") or row.get("note"))):
        if actions.read_only():
            st.write(f"Tags: {row.get('tags') or '(none)'}")
            st.write(row.get("note") or "(no note)")
            return
        tags = st.text_input("Tags (comma-separated)", value=row.get("tags") or "", key=f"tags_{run_id}")
        note = st.text_area("Note", value=row.get("note") or "", key=f"note_{run_id}", max_chars=2000)
        if st.button("Save tags and note", key="save_note", icon=":material/save:"):
            if run_action("Save", lambda: actions.annotate(run_id, tags, note, state.store()) or True):
                flash("success", f"Saved the tags and note of {run_id}.")
            st.rerun()


def url_asked() -> dict[str, list[str]]:
    """The query parameters as the address gave them, before the page's widgets read them."""
    return {k: st.query_params.get_all(k) for k in st.query_params}


def _matches(values: list[str], used: Any) -> bool:
    """Whether the address's `values` are what the widget shows (`used`): the same number, flag, or
    text (a widget with labels puts its label in the address, e.g. 'test' for test_metric)."""
    if isinstance(used, (list, tuple)):
        return len(values) == len(used) and all(_matches([v], u) for v, u in zip(values, used, strict=True))
    value = values[0] if values else ""
    if isinstance(used, bool):
        return value.lower() == str(used).lower()
    if isinstance(used, (int, float)):
        try:
            return math.isclose(text.parse_number(value), float(used), rel_tol=1e-9)
        except (ValueError, IndexError):
            return False
    a, b = value.lower(), str(used).lower()
    return a == b or (bool(a) and (a in b or b in a))


def url_notes(box: Any, asked: dict[str, list[str]]) -> None:
    """A note in `box` for each address parameter the page's widgets refused (out of range, not an
    option): Streamlit drops those from the address and shows the default, so say what was used."""
    dropped = []
    for key, values in asked.items():
        if key not in st.session_state or st.query_params.get_all(key) == values:
            continue
        used = st.session_state[key]
        if not _matches(values, used):
            shown = ", ".join(map(text.plain, used)) if isinstance(used, (list, tuple)) else text.plain(used)
            dropped.append(f"**{key}={', '.join(values)}** (not a value this page accepts; showing {shown or 'none'})")
    if dropped:
        box.warning("Left out from the address: " + "; ".join(dropped) + ".", icon=":material/link_off:")


def whole_number(typed: str, *, default: int, low: int, high: int, noun: str = "a whole number",
                 low_why: str = "the smallest value accepted", high_why: str = "the largest value accepted",
                 ) -> tuple[int, str]:
    """(the number to use, why it is not what was typed: "" when it is), read by text.parse_number
    (240000, 240k, 2.4e5). Unparseable -> `default`; a fraction -> the nearest whole number; out of
    [low, high] -> the nearest bound. The page shows the reason beside the box, so a box never holds
    one value while another is used unsaid."""
    shown = typed.strip()
    try:
        number = text.parse_number(typed)
    except (ValueError, IndexError):
        return default, f"{shown!r} is not {noun} (write 240000, 240k or 2.4e5)"
    value = int(round(number))
    if value < low:
        return low, f"{shown} is below {low_why} ({text.human(low)})"
    if value > high:
        return high, f"{shown} is above {high_why} ({text.human(high)})"
    if value != number:
        return value, f"{shown} is not a whole number"
    return value, ""


def budget_value(typed: str, *, default: int, low: int, high: int) -> tuple[int, str]:
    """`whole_number` for a parameter budget."""
    return whole_number(typed, default=default, low=low, high=high, noun="a number of parameters",
                        low_why="the smallest budget this fit can predict", high_why="the largest budget accepted")


def int_box(where: Any, label: str, *, low: int, high: int, default: int, key: str, **kw: Any) -> int:
    """A whole number typed in a text box (bound to the address) and read by our own parser, not a
    number box that would keep a refused value on screen: when what is typed is not a whole number in
    [low, high], a note under the box says which value is used and why."""
    typed = where.text_input(label, str(default), key=key, bind="query-params", **kw)
    value, problem = whole_number(typed, default=default, low=low, high=high)
    if problem:
        where.warning(f"Using **{value:,}**: {problem}.", icon=":material/info:")
    return value


def task_picker(frame: pl.DataFrame, key: str = "task") -> str | None:
    """The tasks present in the store, the one with most finished runs first (bound to the URL)."""
    tasks = frames.tasks_by_done(frame)
    if not tasks:
        return None
    return st.selectbox("Task", tasks, key=key, bind="query-params")


def metric_picker(key: str = "metric") -> str:
    return st.selectbox("Metric", list(text.METRICS), key=key, format_func=lambda m: text.METRICS[m],
                        bind="query-params")


def open_runs(run_ids: Sequence[str], label: str | None = None) -> None:
    ids = [r for r in dict.fromkeys(run_ids) if r][:12]
    if ids:
        st.page_link(RUN_PAGE, label=label or f"Open {len(ids)} run(s) in Run detail", icon=":material/open_in_new:",
                     query_params={"runs": ids})


def selected_run_ids(event: Any) -> list[str]:
    """Run ids of the points selected or clicked in a plotly chart (first customdata entry)."""
    try:
        points = event.selection.points
    except AttributeError:
        try:
            points = event["selection"]["points"]
        except (KeyError, TypeError):
            return []
    ids: list[str] = []
    for p in points:
        custom = p.get("customdata") if isinstance(p, dict) else None
        if custom:
            ids += [i for i in str(custom[0]).split(",") if i]
    return list(dict.fromkeys(ids))
