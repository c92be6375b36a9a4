"""Design and queue: a task, a budget and an allocation give the exact configuration, its cost and
its place on the iso-budget curve; then queue it, an iso-budget sweep through it, or a budget ladder."""

from __future__ import annotations

import json

import polars as pl
import streamlit as st

from app import actions, current, data, figures, fits, state, text, ui
from elm_core.budget import PRESET_BUDGET
from elm_core.data import TASKS
from elm_core.spec import PRESETS, RunSpec
from elm_core.sweeps import iso_sweep, ladder_sweep, new_sweep_id

BUDGET_MIN, BUDGET_MAX = 1_000, 1_000_000_000
BUDGET_STEPS = sorted({int(m * 10**e) for e in range(3, 9) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)})
ADVANCED = {  # key -> (spec field, label, kind of task, float?)
    "steps": ("steps", "training steps", "char", False),
    "epochs": ("epochs", "epochs", "spike", False),
    "batches": ("batches_per_epoch", "batches per epoch", "spike", False),
    "batch": ("batch_size", "batch size", None, False),
    "seq_len": ("seq_len", "sequence length (characters)", "char", False),
    "eval_chars": ("eval_chars", "validation characters", "char", False),
    "test_chars": ("test_chars", "test characters", "char", False),
    "eval_samples": ("eval_samples", "validation samples", "spike", False),
    "test_samples": ("test_samples", "test samples", "spike", False),
    "lr": ("lr", "learning rate", None, True),
}


def default_budget(task: str, preset: str) -> int:
    """The preset's usual budget, or twice the task's smallest network when that is larger (a large
    vocabulary makes the readout layer alone cost more than the small preset's budget)."""
    info = state.task_info(task, str(state.settings().data_path))
    floor = 2 * data.minimum_budget(info, preset)
    budget = PRESET_BUDGET.get(preset, 60_000)
    return budget if budget >= floor else next((b for b in BUDGET_STEPS if b >= floor), floor)


def nearest_step(value: float) -> int:
    return min(BUDGET_STEPS, key=lambda b: abs(b - value) / b)


def typed_budget() -> int:
    """The budget in the box as the page uses it (ui.whole_number: the nearest bound when out of range)."""
    default = default_budget(st.session_state["task"], st.session_state["preset"])
    return ui.whole_number(st.session_state["budget"], default=default, low=BUDGET_MIN, high=BUDGET_MAX)[0]


def follow_budget() -> None:
    """The ladder box follows the budget (what it offers is around the budget chosen)."""
    st.session_state["ladder"] = ", ".join(map(text.human, data.ladder_default(typed_budget())))


def on_budget_number() -> None:
    st.session_state["budget_slider"] = nearest_step(typed_budget())
    follow_budget()


def on_budget_slider() -> None:
    st.session_state["budget"] = str(int(st.session_state["budget_slider"]))
    follow_budget()


def on_preset() -> None:
    """A new preset brings its layer settings (d_tree, d_brch) and a budget that suits it."""
    preset = PRESETS[st.session_state["preset"]]
    st.session_state["d_tree"] = str(preset["model"]["d_tree"])
    st.session_state["d_brch"] = str(preset["model"]["d_brch"])
    budget = default_budget(st.session_state["task"], st.session_state["preset"])
    st.session_state["budget"] = str(budget)
    st.session_state["budget_slider"] = nearest_step(budget)
    follow_budget()


def on_task() -> None:
    """A new task brings its kind's preset (if the current one does not fit it) and a budget that suits it."""
    info = state.task_info(st.session_state["task"], str(state.settings().data_path))
    if st.session_state.get("preset") not in data.presets_for(info.kind):
        st.session_state["preset"] = data.preset_for(info.kind, None)
    on_preset()


st.title("Design and queue")
ui.show_flash()
settings = state.settings()
runs = state.runs()
if runs.height == 0:
    ui.first_screen("design")
    st.divider()

# --- task, preset, budget ---------------------------------------------------------------------------
c_task, c_preset = st.columns([2, 1])
task = c_task.selectbox("Task", list(TASKS), key="task", bind="query-params", on_change=on_task,
                        help="\n".join(f"{k}: {v}" for k, v in TASKS.items()))
c_task.caption(TASKS[task])
info = state.task_info(task, str(settings.data_path))
preset = c_preset.selectbox("Preset (training protocol and layer settings)", data.presets_for(info.kind),
                            key="preset", bind="query-params", on_change=on_preset,
                            index=data.presets_for(info.kind).index(data.preset_for(info.kind, None)))
options = PRESETS[preset].get("task_options", {})
if options:
    info = state.task_info(task, str(settings.data_path), json.dumps(options, sort_keys=True))
if not info.available:
    st.warning(f"The data for **{task}** is not here: {info.why}. You can design for it; queueing needs the files.")

c_slider, c_number = st.columns([3, 1])
budget = ui.int_box(c_number, "Budget (parameters)", low=BUDGET_MIN, high=BUDGET_MAX,
                    default=default_budget(task, preset), key="budget", on_change=on_budget_number,
                    help="A number of parameters: 240000, 240k, 2.4e5, 1.5M.")
c_slider.select_slider("Budget (log scale)", options=BUDGET_STEPS, value=nearest_step(budget), key="budget_slider",
                       format_func=text.human, on_change=on_budget_slider)

# --- allocation -------------------------------------------------------------------------------------
mode = st.segmented_control(
    "The budget sets", list(data.MODES), key="mode", default="neurons", required=True, bind="query-params",
    help="neurons: N follows from the budget; memory: d_m (and k_e); connectivity: d_brch (and k_c). The "
         "address takes the same short names (?mode=memory).",
) or "neurons"
st.caption(data.MODES[mode] + ". Change the other two; the third follows from the budget.")
layer = PRESETS[preset]["model"]
cols = st.columns(4)
d_m = n_neurons = 0
if mode != "memory":
    d_m = ui.int_box(cols[0], "d_m: memory units per neuron", low=1, high=10_000, default=8, key="d_m")
if mode != "neurons":
    n_neurons = ui.int_box(cols[1], "N: neurons", low=1, high=1_000_000, default=64, key="n")
d_tree = ui.int_box(cols[2], "d_tree: branches", low=1, high=1_000, default=layer["d_tree"], key="d_tree")
d_brch = layer["d_brch"]
if mode != "connectivity":
    d_brch = ui.int_box(cols[3], "d_brch: synapses per branch", low=1, high=1_000, default=layer["d_brch"],
                        key="d_brch")

with st.expander("Advanced: training length, batch, evaluation (empty = the preset's value)"):
    proto = RunSpec(task=task, preset=preset, budget=10**9, d_m=1).protocol(info.kind)
    overrides = {}
    adv_cols = st.columns(4)
    shown = [(k, v) for k, v in ADVANCED.items() if v[2] in (None, info.kind)]
    for i, (key, (field, label, _kind, is_float)) in enumerate(shown):
        default = proto.get(field)
        overrides[field] = adv_cols[i % 4].number_input(
            label, min_value=1e-6 if is_float else 1, value=None, key=key, bind="query-params",
            placeholder=f"preset: {default if default is not None else 'all'}", format="%g" if is_float else None,
        )
    l_mlp = adv_cols[len(shown) % 4].number_input("l_mlp: MLP hidden layers", 0, 8, 1, key="l_mlp",
                                                   bind="query-params")
    n_seeds = adv_cols[(len(shown) + 1) % 4].number_input("seeds per configuration", 1, 20, 1, key="seeds",
                                                          bind="query-params")

# --- the design, live -------------------------------------------------------------------------------


def show_design(design: data.Design) -> float:
    """The design's numbers and figures; returns its estimated run time in seconds."""
    cfg = design.cfg
    st.subheader("This design")
    m = st.columns(6)
    m[0].metric("Parameters (exact)", f"{design.params:,}", f"{design.params / budget:.1%} of the budget",
                **ui.NOTE)
    m[1].metric("N (neurons)", f"{cfg.n_neurons:,}")
    m[2].metric("d_m", cfg.d_m)
    m[3].metric("k_e (complexity)", f"{design.k_e:,}")
    m[4].metric("k_c (connectivity)", f"{design.k_c:,}", f"{cfg.d_tree} x {cfg.d_brch}", **ui.NOTE)
    m[5].metric("FLOPs per step", text.human(design.flops), "forward, per sample", **ui.NOTE)
    seconds, basis = data.estimate_seconds(runs, design)
    iso = (state.iso_fits(task, "test_metric", "d_m") if runs.height and task in runs["task"].to_list()
           else fits.NoFit("no runs of this task"))
    prediction = data.predicted_metric(iso, design)
    e = st.columns(3)
    e[0].metric("Estimated run time", text.duration(seconds), basis, **ui.NOTE)
    e[1].metric("Training tokens", text.human(design.train_tokens),
                f"{design.protocol.get('steps') or design.protocol.get('epochs')} "
                f"{'steps' if info.kind == 'char' else 'epochs'}", **ui.NOTE)
    law = state.scaling(task, "test_metric") if prediction is None and not isinstance(iso, fits.NoFit) else None
    if prediction is not None:
        value, fit = prediction
        e[2].metric(f"Predicted test {info.metric_name}", f"{value:.3f}",
                    f"iso-budget fit of {fit.n_points} runs at {text.human(fit.budget)}", **ui.NOTE)
    elif law is not None and not isinstance(law, fits.NoFit):
        value = float(law.predict(cfg.n_neurons, design.k_e, design.k_c))
        lo, hi = fits.fitted_budgets(state.fit_frame(task, "test_metric"), law)
        basis = f"scaling-law fit of {law.n_runs} runs" if lo <= budget <= hi else \
            f"extrapolated: the scaling law saw budgets {text.human(lo)} to {text.human(hi)}"
        e[2].metric(f"Predicted test {info.metric_name}", f"{value:.3f}", basis, **ui.NOTE)
    else:
        e[2].metric(f"Predicted test {info.metric_name}", "-", "no fitted runs at this budget yet", **ui.NOTE)

    left, right = st.columns([2, 1])
    curve = data.allocation_curve(design, int(budget))
    fitted = None
    if prediction is not None:
        fitted = pl.DataFrame({"x": prediction[1].curve_x, "metric": prediction[1].curve_y})
    alloc_fig = figures.allocation_figure(curve, {"d_m": cfg.d_m, "n_neurons": cfg.n_neurons}, fitted=fitted,
                                          metric_name=info.metric_name)
    left.plotly_chart(alloc_fig, key="design_allocation")
    parts_fig = figures.breakdown_figure(design.parts)
    right.plotly_chart(parts_fig, key="design_breakdown")
    right.caption(f"Per hidden neuron: k_c = d_tree x d_brch = {design.k_c:,} synapse weights; k_e = {design.k_e:,} "
                  f"(MLP {cfg.d_tree + cfg.d_m} -> {cfg.d_mlp_eff} -> {cfg.d_m}, memory readout). "
                  f"Readout: {info.n_out} ELM neurons and a dense {info.n_out} x {info.n_out} layer.")
    current.add_figure("Iso-budget position", alloc_fig)
    current.add_figure("Parameter breakdown", parts_fig)
    current.add_settings(task=task, preset=preset, budget=int(budget), mode=mode, **cfg.to_dict())
    return seconds


# --- queue ------------------------------------------------------------------------------------------


def validated(specs: list[RunSpec]) -> list[RunSpec]:
    """Specs whose configuration resolves; ValueError listing the ones that do not."""
    bad = []
    for spec in specs:
        try:
            spec.resolve_config(n_in=info.n_in, n_out=info.n_out, kind=info.kind)
        except ValueError as exc:
            bad.append(f"budget={spec.budget}, d_m={spec.d_m}: {ui.explain(exc)}")
    if bad:
        raise ValueError("; ".join(dict.fromkeys(bad)))
    return specs


def queue(what: str, build) -> None:
    ids = ui.run_action(what, lambda: actions.submit(validated(build())))
    if ids:
        ui.flash("success", f"{what}: queued {len(ids)} run(s).", ids)
    st.rerun()


def show_queue(design: data.Design, seconds: float) -> None:
    st.subheader("Queue")
    if actions.read_only():
        st.info("This dashboard is read-only: queueing is off.", icon=":material/lock:")
        return
    if not info.available:
        st.caption("Queueing needs the task's data files (see above).")
        return
    fields = {k: v for k, v in design.spec.model_dump(exclude_defaults=True).items()
              if k not in ("task", "budget", "d_m", "n_neurons", "seed", "run_id", "sweep_id")}
    seeds = list(range(int(n_seeds)))
    done = runs.filter((pl.col("task") == task) & (pl.col("status") == "done")) if runs.height else runs
    largest = done["budget"].max() if done.height else None
    try:
        n_dm = len(text.parse_ints(st.session_state.get("sweep_dm") or "1, 2, 4, 8, 16, 32", "d_m values"))
    except ValueError:
        n_dm = 1
    # Run time grows about in proportion to the budget: the ladder's rungs (1/4 to 4 times) cost 7.75 runs.
    need = {"run": data.confirmation_reasons(seconds * len(seeds), budget, largest),
            "sweep": data.confirmation_reasons(seconds * len(seeds) * n_dm, budget, largest),
            "ladder": data.confirmation_reasons(seconds * len(seeds) * n_dm * 7.75, 4 * budget, largest)}
    confirmed = True
    if any(need.values()):
        worst = next(v for v in (need["run"], need["sweep"], need["ladder"]) if v)
        which = next(k for k in ("run", "sweep", "ladder") if need[k])
        confirmed = st.checkbox(f"I mean it: queue even though {'; '.join(worst)}"
                                + ("" if which == "run" else f" (the {which} below)"), key="confirm_big")
    q1, q2, q3 = st.columns(3)
    with q1:
        st.markdown("**This run**")
        st.caption(f"{len(seeds)} seed(s), about {text.duration(seconds * len(seeds))} of compute.")
        if st.button("Queue this run", key="queue_run", type="primary", icon=":material/play_arrow:",
                     disabled=bool(need["run"]) and not confirmed):
            sweep = new_sweep_id("run")
            queue("Queue this run",
                  lambda: [design.spec.model_copy(update={"seed": s, "sweep_id": sweep}) for s in seeds])
    with q2:
        st.markdown("**Iso-budget sweep** (this budget, several d_m; N follows)")
        dm_text = st.text_input("d_m values", "1, 2, 4, 8, 16, 32", key="sweep_dm", bind="query-params")
        if st.button("Queue an iso-budget sweep", key="queue_sweep", icon=":material/stacked_line_chart:",
                     disabled=bool(need["sweep"]) and not confirmed):
            queue("Iso-budget sweep", lambda: iso_sweep(
                task, int(budget), text.parse_ints(dm_text, "d_m values"), seeds, **fields))
    with q1:
        show_search_button(task, int(budget), dm_text, seeds, fields)
    with q3:
        st.markdown("**Budget ladder** (the iso-budget sweep at several budgets)")
        if "ladder" not in st.session_state and "ladder" not in st.query_params:
            st.session_state["ladder"] = ", ".join(map(text.human, data.ladder_default(int(budget))))
        ladder_text = st.text_input("budgets", key="ladder", bind="query-params",
                                    help="Defaults to 1/4 to 4 times the budget above, within 1k to 1G.")
        if st.button("Queue a budget ladder", key="queue_ladder", icon=":material/stairs:",
                     disabled=bool(need["ladder"]) and not confirmed):
            queue("Budget ladder", lambda: ladder_sweep(
                task, text.parse_ints(ladder_text, "budgets"), d_m_values=text.parse_ints(dm_text, "d_m values"),
                seeds=seeds, **fields))


def show_search_button(task: str, budget: int, dm_text: str, seeds: list[int], fields: dict) -> None:
    """Find the optimum at this budget: a multi-fidelity search over the sweep's d_m values (app/search.py)."""
    from app import search

    st.markdown("**Find the optimum at this budget** (a search: stops the losing d_m early)")
    if st.button("Find the optimum at this budget", key="queue_search", icon=":material/search:"):
        out = ui.run_action("Search", lambda: search.start_search(
            task, budget, text.parse_ints(dm_text, "d_m values"), seeds if len(seeds) > 1 else [0, 1, 2], fields))
        if out:
            ui.flash("success", f"Search {out[0]}: queued {len(out[1])} run(s); the Search page follows it.", out[1])
        st.rerun()


try:
    chosen = data.make_design(info, budget=int(budget), mode=mode, d_m=int(d_m or 1), n_neurons=int(n_neurons or 1),
                              d_tree=int(d_tree), d_brch=int(d_brch), preset=preset, l_mlp=int(l_mlp),
                              overrides=overrides)
except ValueError as exc:
    st.error(f"**This design is not possible:** {ui.explain(exc)}", icon=":material/block:")
else:
    show_queue(chosen, show_design(chosen))
