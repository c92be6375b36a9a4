"""Multi-fidelity search over iso-budget allocations: the pure decision logic (`policy`), learning-curve
extrapolation (`extrapolate`) and the replay of a search on a fully trained grid (`grid_replay`).

    rungs = rung_schedule(total_steps=400, every=2, eta=3)          # (132,): one rung at T / eta
    actions = decide(state, events)                                 # [Stop(...), Start(...)]
    state = apply_actions(state, actions)
    fit_curve(steps, values, final_step=400)                        # CurveFit: l_inf, l_inf_ci, final
    replay(runs_with_curves, Policy(eta=3))                         # [GroupReplay] per budget
"""

from elm_core.search.extrapolate import CurveFit, fit_curve
from elm_core.search.grid_replay import GroupReplay, replay
from elm_core.search.policy import (
    PRUNED,
    GroupState,
    Policy,
    Progress,
    RunState,
    SearchState,
    Start,
    Stop,
    apply_actions,
    apply_events,
    arm_values,
    choose_signal,
    decide,
    judge,
    rung_schedule,
    rung_value,
)

__all__ = [
    "PRUNED",
    "CurveFit",
    "GroupReplay",
    "GroupState",
    "Policy",
    "Progress",
    "RunState",
    "SearchState",
    "Start",
    "Stop",
    "apply_actions",
    "apply_events",
    "arm_values",
    "choose_signal",
    "decide",
    "fit_curve",
    "judge",
    "replay",
    "rung_schedule",
    "rung_value",
]
