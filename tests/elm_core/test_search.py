"""The multi-fidelity search: rungs, decide(), curve extrapolation and the replay, on planted curves."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from elm_core.search import (
    PRUNED,
    GroupState,
    Policy,
    Progress,
    RunState,
    SearchState,
    Start,
    Stop,
    apply_actions,
    choose_signal,
    decide,
    fit_curve,
    replay,
    rung_schedule,
    rung_value,
)
from elm_core.search import policy as policy_module

ARMS = (2, 4, 8, 16, 32, 64)
OPTIMUM = 8.0  # planted: the final metric is a parabola in log2 d_m with its minimum here
TOTAL = 400


def planted_final(d_m: float) -> float:
    return 2.0 + 0.15 * (np.log2(d_m) - np.log2(OPTIMUM)) ** 2


def planted_curve(
    d_m: float, seed: int, rng: np.random.Generator, total: int = TOTAL, eval_every: int = 200
) -> list[dict]:
    """Train loss L(s) = final + 3 s^-0.5 + noise every 2 steps; validation every `eval_every` steps."""
    steps = [1, *range(2, total + 1, 2)]
    sec_per_step = 0.05 * (1 + 64 / d_m)  # small memories, many neurons: slower
    out = []
    for s in steps:
        loss = planted_final(d_m) + 3.0 * s**-0.5 + rng.normal(0, 0.02)
        valid = loss + 0.9 if s % eval_every == 0 and s < total else None
        out.append(dict(step=s, tokens=800 * s, wall_time_s=round(sec_per_step * s, 3), train_loss=loss,
                        valid_metric=valid))
    return out


def planted_runs(budgets=(50_000,), seeds=(0, 1), seed: int = 0, eval_every: int = 200) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for b in budgets:
        for s in seeds:
            for d in ARMS:
                curve = planted_curve(d, s, rng, eval_every=eval_every)
                rows.append(dict(
                    run_id=f"r{b}-{d}-{s}", status="done", task="text", metric_name="bpc", budget=b, params=b,
                    d_m=d, n_neurons=max(1, b // (40 * d)), seed=s, steps=TOTAL,
                    wall_time_s=curve[-1]["wall_time_s"] + 1.0, created_at=float(len(rows)), worker="w1",
                    test_metric=planted_final(d) + 1.0 + rng.normal(0, 0.01), curve=json.dumps(curve),
                ))
    return pl.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Rungs and the signal


def test_rungs_are_geometric_in_eta_and_on_steps_where_the_signal_exists():
    assert rung_schedule(400, 2, eta=3) == (132,)
    assert rung_schedule(400, 2, eta=3, min_rung=10) == (14, 44, 132)
    assert rung_schedule(400, 200, eta=3) == ()  # nothing below 133 is a multiple of 200
    assert rung_schedule(8000, 100, eta=2, min_rung=1000) == (1000, 2000, 4000)
    with pytest.raises(ValueError):
        rung_schedule(400, 2, eta=1)


def test_sparse_validation_falls_back_to_the_training_curve():
    assert choose_signal(400, 200, 2) == ("train", (132,))
    assert choose_signal(900, 100, 1, min_rung=300) == ("valid", (300,))  # three points at or before 300
    assert choose_signal(900, 100, 1, min_rung=100) == ("train", (100, 300))  # one point at 100: no error
    assert choose_signal(900, 200, 1, min_rung=100) == ("train", (100, 300))  # 200 carries only 200
    assert choose_signal(900, None, 1)[0] == "train"


def test_rung_value_reads_the_local_trend_at_the_rung_with_its_error():
    rng = np.random.default_rng(1)
    steps = np.arange(2, 134, 2)
    curve = list(zip(steps.tolist(), (5.0 - 0.01 * steps + rng.normal(0, 0.05, steps.size)).tolist(), strict=True))
    value, se = rung_value(curve, 132)
    assert abs(value - (5.0 - 1.32)) < 3 * se
    assert 0 < se < 0.05
    assert rung_value(curve, 1) is None
    assert np.isnan(rung_value([(200, 3.1)], 200)[1])  # one point: no measurement error


# --------------------------------------------------------------------------------------------------
# decide()


def _run(arm: float, seed: int, step: int, final: float, status: str = "running", noise: float = 0.0) -> RunState:
    rng = np.random.default_rng(int(arm * 10 + seed))
    pts = tuple((s, float(final + 3.0 * s**-0.5 + rng.normal(0, noise or 0.02))) for s in range(2, step + 1, 2))
    return RunState(run_id=f"a{arm:g}s{seed}", arm=float(arm), seed=seed, status=status, step=step, curve=pts)


def _group(runs, arms=ARMS, seeds=(0, 1)) -> GroupState:
    return GroupState(50_000.0, tuple(float(a) for a in arms), seeds, TOTAL, (44, 132), "train", False, tuple(runs))


def test_decide_stops_the_clearly_worse_arms_and_never_the_best_or_its_neighbours():
    runs = [_run(d, 0, 132, planted_final(d)) for d in ARMS]
    actions = decide(SearchState((_group(runs),)))
    stopped = {a.run_id for a in actions if isinstance(a, Stop)}
    assert stopped == {"a2s0", "a32s0", "a64s0"}  # 16 is clearly worse too, but it neighbours the best (8)
    assert all(a.reason.startswith(f"{PRUNED} 132: rank") for a in actions if isinstance(a, Stop))


def test_an_arm_within_the_best_ones_interval_is_kept():
    runs = [_run(d, 0, 132, 2.0 + (0.001 * d if d < 64 else 0.5), noise=0.05) for d in ARMS]
    stopped = {a.run_id for a in decide(SearchState((_group(runs),))) if isinstance(a, Stop)}
    assert stopped == {"a64s0"}  # 16 and 32 rank outside the best third but cannot be told from the best


def test_nobody_is_stopped_at_a_rung_with_fewer_than_three_arms_or_to_below_three_arms():
    two = [_run(2, 0, 132, 2.0), _run(64, 0, 132, 3.5)]
    assert not [a for a in decide(SearchState((_group(two),))) if isinstance(a, Stop)]
    pruned = RunState("a2s0", 2.0, 0, "cancelled", 132, (), 0.0, f"{PRUNED} 132: rank 4 of 4")
    runs = [pruned, _run(4, 0, 132, 2.0), _run(8, 0, 132, 2.01), _run(16, 0, 132, 3.5)]
    assert not [a for a in decide(SearchState((_group(runs, arms=(2, 4, 8, 16)),))) if isinstance(a, Stop)]


def test_decide_is_pure_and_idempotent():
    runs = [_run(d, 0, 132, planted_final(d)) for d in ARMS]
    state = SearchState((_group(runs),), Policy(max_seeds=2))
    first = decide(state)
    assert first == decide(state)  # same input, same actions; the state is untouched
    assert any(isinstance(a, Stop) for a in first) and any(isinstance(a, Start) for a in first)
    after = apply_actions(state, first)
    again = decide(after)
    assert not {a.run_id for a in again if isinstance(a, Stop)} & {a.run_id for a in first if isinstance(a, Stop)}
    assert not {(a.arm, a.seed) for a in again if isinstance(a, Start)} & {
        (a.arm, a.seed) for a in first if isinstance(a, Start)
    }
    # A controller restarted later rebuilds the state from the store: the stopped runs are cancelled
    # with their reason, the started ones queued. Nothing is done twice.
    rebuilt = SearchState(
        tuple(
            GroupState(g.budget, g.arms, g.seeds, g.total_steps, g.rungs, g.signal, g.maximize, tuple(
                RunState(r.run_id, r.arm, r.seed, "cancelled" if r.status == "stopping" else r.status, r.step,
                         r.curve, r.wall_time_s, r.reason) for r in g.runs))
            for g in after.groups
        ),
        state.policy,
    )
    assert decide(rebuilt) == again


def test_a_rung_decision_does_not_wait_for_slower_arms():
    runs = [_run(d, 0, 44, planted_final(d), noise=0.005) for d in (2, 4, 8, 16)]
    runs += [_run(64, 0, 50, planted_final(64) + 1.0, noise=0.005), _run(32, 0, 6, planted_final(32))]
    actions = decide(SearchState((_group(runs),)))
    stopped = {a.run_id for a in actions if isinstance(a, Stop)}
    assert stopped == {"a2s0", "a64s0"}  # judged at rung 44 while d_m 32 is still at step 6
    assert "a32s0" not in stopped


def test_no_seed_is_promoted_before_three_arms_reached_the_top_rung():
    done = [_run(d, 0, TOTAL, planted_final(d), status="done") for d in (8, 16)]
    early = [_run(d, 0, 100, planted_final(d)) for d in (2, 4)]  # below the top rung (132)
    arms = (2, 4, 8, 16)
    state = SearchState((_group(done + early, arms=arms),))
    assert not [a for a in decide(state) if isinstance(a, Start)]  # two arms at the top rank nothing
    third = replace(early[1], step=140, curve=_run(4, 0, 140, planted_final(4)).curve)
    starts = [a for a in decide(SearchState((_group([*done, early[0], third], arms=arms),))) if isinstance(a, Start)]
    assert starts == [Start(50_000.0, 8.0, 1)]  # the best of the three that reached it


def test_seeds_go_to_a_third_of_the_contenders_whose_interval_overlaps_the_best():
    stopped = [replace(_run(d, 0, 132, planted_final(d) + 1.0), status="cancelled", reason=f"{PRUNED} 132: rank 6")
               for d in (2, 32, 64)]
    runs = [*stopped, *[_run(d, 0, TOTAL, planted_final(d), status="done") for d in (4, 8, 16)]]
    # Six arms reached the top rung but three were stopped: one place among the three contenders.
    assert [a for a in decide(SearchState((_group(runs),))) if isinstance(a, Start)] == [Start(50_000.0, 8.0, 1)]
    level = {4: 2.0, 8: 2.004, 16: 2.5, 32: 2.006}
    close = [_run(d, 0, TOTAL, level[d], status="done", noise=0.01) for d in level]
    group = _group(close, arms=(4, 8, 16, 32))
    starts = [a for a in decide(SearchState((group,), Policy(eta=2))) if isinstance(a, Start)]
    # eta 2 leaves floor(4 / 2) = 2 places among the four contenders; d_m 16 is clearly behind the
    # best and gets none; of the three close ones the two best get the places, d_m 32 waits.
    assert starts == [Start(50_000.0, 4.0, 1), Start(50_000.0, 8.0, 1)]
    assert [a.why for a in starts] == ["contender", "contender"]
    # eta 3: floor(4 / 3) = 1 place, the best's.
    assert [a for a in decide(SearchState((group,), Policy(eta=3))) if isinstance(a, Start)] == [starts[0]]


def test_an_arm_that_got_a_seed_keeps_its_place_as_the_ranking_moves():
    runs = [_run(d, 0, TOTAL, planted_final(d), status="done") for d in (4, 8, 16)]
    # d_m 4 was the best when it got its second seed; that seed ended worse and d_m 8 leads now.
    runs.append(_run(4, 1, TOTAL, planted_final(4) + 0.2, status="done"))
    state = SearchState((_group(runs, arms=(4, 8, 16), seeds=(0, 1, 2)),), Policy(max_seeds=2))
    assert not [a for a in decide(state) if isinstance(a, Start)]  # one place, taken: no new arm seeded


def _pruned(arm: float, final: float) -> RunState:
    return replace(_run(arm, 0, 132, final), status="cancelled", reason=f"{PRUNED} 132: rank 6 of 6")


def test_a_stopped_neighbour_of_the_finished_best_is_trained_again_to_the_end():
    # d_m 16 started slowly and was stopped at the rung; d_m 8 ended best of the finished arms.
    runs = [*[_run(d, 0, TOTAL, planted_final(d), status="done") for d in (2, 4, 8)],
            *[_pruned(d, planted_final(d) + 0.5) for d in (16, 32, 64)]]
    state = SearchState((_group(runs),), Policy(max_seeds=2))
    starts = [a for a in decide(state) if isinstance(a, Start)]
    assert starts[0] == Start(50_000.0, 16.0, 1)  # reopened before any seed promotion
    state = apply_actions(state, starts)
    # The reopened run looks as bad at the rung as the first one did: it is not judged again.
    again = next(r for r in state.groups[0].runs if r.arm == 16.0 and r.seed == 1)
    slow = replace(again, status="running", step=200, curve=_run(16, 1, 200, planted_final(16) + 0.5).curve)
    rebuilt = SearchState((replace(state.groups[0], runs=tuple(slow if r is again else r
                                                                for r in state.groups[0].runs)),), state.policy)
    actions = decide(rebuilt)
    assert not [a for a in actions if isinstance(a, Stop)]
    assert not [a for a in actions if isinstance(a, Start) and a.arm == 16.0]  # started once


def test_nothing_is_reopened_while_the_race_runs_or_beyond_the_limit():
    done = [_run(d, 0, TOTAL, planted_final(d), status="done") for d in (2, 4)]
    runs = [*done, _run(8, 0, 300, planted_final(8)), *[_pruned(d, planted_final(d) + 0.5) for d in (16, 32, 64)]]
    assert not [a for a in decide(SearchState((_group(runs),))) if isinstance(a, Start) and a.arm == 16.0]
    finished = [*done, _run(8, 0, TOTAL, planted_final(8), status="done"),
                *[_pruned(d, planted_final(d) + 0.5) for d in (16, 32, 64)]]
    spent = 3 * TOTAL + 3 * 132
    assert not [a for a in decide(SearchState((_group(finished),), Policy(compute_limit=spent + TOTAL - 1)))
                if isinstance(a, Start)]
    assert not [a for a in decide(SearchState((_group(finished),), Policy(max_seeds=1)))
                if isinstance(a, Start)]


def test_events_are_folded_in_and_a_finished_run_stays_finished():
    runs = [_run(d, 0, 132, planted_final(d)) for d in ARMS]
    state = SearchState((_group(runs),))
    done = Progress("a8s0", TOTAL, "done")
    late = Progress("a8s0", 200, "running")
    actions = decide(state, [done, late])
    starts = [a for a in actions if isinstance(a, Start)]
    assert Start(50_000.0, 8.0, 1) in starts  # the finished best arm gets its next seed


def test_first_seeds_go_out_from_the_middle_of_the_allocation_axis():
    assert policy_module.submission_order((2, 4, 8, 16, 32, 64)) == [8, 16, 4, 32, 2, 64]
    assert policy_module.submission_order((2, 4, 8, 12, 16)) == [8, 12, 4, 16, 2]
    first = decide(SearchState((_group([]),)))
    assert [a.arm for a in first] == [8.0, 16.0, 4.0, 32.0, 2.0, 64.0]
    assert {a.why for a in first} == {"first seed"} and {a.seed for a in first} == {0}


def test_the_limit_holds_with_running_runs_counted_to_the_end():
    # Two runs' worth: the two middle arms start, the others wait.
    first = decide(SearchState((_group([]),), Policy(compute_limit=TOTAL * 2.5)))
    assert [a.arm for a in first] == [8.0, 16.0]
    running = [_run(8, 0, 50, planted_final(8)), _run(16, 0, 50, planted_final(16))]
    # 100 steps trained, but the two running runs may go to the end: 800 committed, no room for a third.
    assert not decide(SearchState((_group(running),), Policy(compute_limit=TOTAL * 2.5)))
    # One of them is stopped at the rung: 132 + 400 committed, a third run fits (932 <= 1000), a fourth not.
    stopped = replace(running[1], status="cancelled", step=132, reason=f"{PRUNED} 132: rank 3 of 3")
    starts = decide(SearchState((_group([running[0], stopped]),), Policy(compute_limit=TOTAL * 2.5)))
    assert starts == [Start(50_000.0, 4.0, 0)]


def test_the_compute_limit_bounds_new_seeds():
    runs = [_run(d, 0, TOTAL, planted_final(d), status="done") for d in ARMS]
    assert not [a for a in decide(SearchState((_group(runs),), Policy(compute_limit=6.5 * TOTAL)))
                if isinstance(a, Start)]
    seeds = [a for a in decide(SearchState((_group(runs),), Policy(compute_limit=7 * TOTAL))) if isinstance(a, Start)]
    assert seeds == [Start(50_000.0, 8.0, 1)]  # the best first, and only as many as fit


def test_a_limit_in_cpu_hours_counts_the_recorded_wall_time():
    runs = [replace(_run(d, 0, TOTAL, planted_final(d), status="done"), wall_time_s=360.0) for d in ARMS]
    group = _group(runs)  # 0.6 CPU-hours spent; another run costs 400 steps x 0.9 s = 0.1 h
    starts = [
        [a for a in decide(SearchState((group,), Policy(compute_limit=lim, limit_unit="cpu_hours")))
         if isinstance(a, Start)]
        for lim in (0.65, 0.75)
    ]
    assert starts == [[], [Start(50_000.0, 8.0, 1)]]


def test_a_limit_in_cpu_hours_prices_runs_before_admitting_them():
    """Before any run has a rate, one run starts alone; once it has progressed, the rest are priced
    from its seconds per step and only as many start as fit (a blind start of every first seed
    overshoots the limit)."""
    policy = Policy(compute_limit=0.25, limit_unit="cpu_hours")  # 400 steps x 0.9 s = 0.1 h a run

    def starts(runs):
        return [a for a in decide(SearchState((_group(runs),), policy)) if isinstance(a, Start)]

    first = starts([])
    assert first == [Start(50_000.0, 8.0, 0)]  # the middle of the axis first
    queued = [replace(_run(8, 0, 0, 0.0), status="queued", curve=())]
    assert starts(queued) == []  # still unpriced: nothing more starts
    running = [replace(_run(8, 0, 40, planted_final(8)), wall_time_s=36.0)]  # 0.9 s a step
    assert starts(running) == [Start(50_000.0, 16.0, 0)]  # 0.1 h committed + 0.1 fits 0.25; a third would not


# --------------------------------------------------------------------------------------------------
# Learning-curve extrapolation


@pytest.mark.parametrize("l_inf,amp,alpha", [(1.5, 2.0, 0.5), (2.2, 4.0, 0.8), (0.9, 1.0, 0.3)])
def test_the_power_law_floor_is_recovered_within_its_interval(l_inf, amp, alpha):
    rng = np.random.default_rng(7)
    s = np.arange(10, 2001, 10, dtype=float)
    y = l_inf + amp * s**-alpha + rng.normal(0, 0.01, s.size)
    fit = fit_curve(s, y, final_step=4000)
    assert fit.ok
    lo, hi = fit.l_inf_ci
    assert lo <= l_inf <= hi
    assert hi - lo < 0.5
    truth = l_inf + amp * 4000**-alpha
    assert fit.final_ci[0] <= truth <= fit.final_ci[1]


def test_a_maximised_curve_is_flipped_and_back():
    s = np.arange(5, 505, 5, dtype=float)
    acc = 0.9 - 0.5 * s**-0.6 + np.random.default_rng(3).normal(0, 0.005, s.size)
    fit = fit_curve(s, acc, 1000, maximize=True)
    assert fit.ok and fit.l_inf_ci[0] <= 0.9 <= fit.l_inf_ci[1]
    assert fit.final < fit.l_inf  # an accuracy still rising towards its ceiling


def test_a_short_curve_says_too_few_points():
    fit = fit_curve([10, 20, 30], [3.0, 2.8, 2.7], 400)
    assert not fit.ok and "too few points" in fit.note


# --------------------------------------------------------------------------------------------------
# Replay


def _nearest_arm(x: float) -> float:
    return min(ARMS, key=lambda a: abs(np.log(a) - np.log(x)))


def check_search_finds_the_planted_optimum(df: pl.DataFrame) -> None:
    """The search must finish the planted optimum's arm, land inside the grid's interval and, with
    no compute limit, spend under 0.45 of the grid: three arms stopped at the rung (0.33 of a run
    each), the three others finished, one of them (the best) seeded again is 0.42 of the grid."""
    (g,) = replay(df, Policy(), n_boot=100)
    finished_arms = {float(r.split("-")[1]) for r in g.finished}
    stopped_arms = {float(r.split("-")[1]) for r in g.stopped}
    assert OPTIMUM in finished_arms and OPTIMUM not in stopped_arms, f"the optimum's arm was stopped: {g.stopped}"
    assert g.inside, (g.search_optimum, g.grid_ci)
    assert _nearest_arm(g.search_optimum) == OPTIMUM
    assert g.compute_fraction < 0.45, f"compute {g.compute_fraction:.3f} of the grid; finished {g.finished}"


def test_the_replay_finds_the_planted_optimum_for_less_compute():
    check_search_finds_the_planted_optimum(planted_runs())


def test_dense_validation_is_the_signal_and_still_finds_the_optimum():
    df = planted_runs(eval_every=20)
    (g,) = replay(df, Policy(), n_boot=50)
    assert g.signal == "valid" and g.rungs == (120,)
    assert g.stopped  # the validation curve, not only the training loss, can stop an arm
    check_search_finds_the_planted_optimum(df)


def test_a_policy_that_stops_the_best_arm_fails_the_check(monkeypatch):
    def prune_the_best(group, arm, rung, values, policy):
        return "broken" if arm == min(values, key=lambda a: values[a][0]) and len(values) > 1 else None

    monkeypatch.setattr(policy_module, "judge", prune_the_best)
    with pytest.raises(AssertionError, match="the optimum's arm was stopped"):
        check_search_finds_the_planted_optimum(planted_runs())


def test_a_policy_that_seeds_every_early_leader_fails_the_check(monkeypatch):
    def eager(group, top_values, out, policy):  # the best third of whoever reached the rung, from the first
        order = sorted(top_values, key=lambda a: top_values[a][0])
        return [a for a in order[: -(-len(order) // policy.eta)] if a not in out]

    monkeypatch.setattr(policy_module, "promoted", eager)
    with pytest.raises(AssertionError, match=r"compute 0\.\d+ of the grid"):
        check_search_finds_the_planted_optimum(planted_runs())


def test_replay_reports_every_field_per_budget_group():
    groups = replay(planted_runs(budgets=(50_000, 200_000)), Policy(), n_boot=50, limit_fraction=0.4)
    assert [g.budget for g in groups] == [50_000.0, 200_000.0]
    for g in groups:
        d = g.to_dict()
        for key in ("budget", "compute_fraction", "wall_fraction", "search_optimum", "grid_optimum", "grid_ci",
                    "inside", "signal", "rungs", "finished", "stopped"):
            assert key in d
        assert 0 < d["compute_fraction"] <= 0.4 + 1e-9
        assert 0 < d["wall_fraction"] < 1
        assert d["signal"] == "train" and "too sparse" in d["signal_note"]
        assert all(reason.startswith(PRUNED) for reason in d["stopped"].values())


def test_the_cli_prints_one_json_object_with_the_groups(tmp_path, capsys):
    from elmlab.cli import main

    path = tmp_path / "runs.parquet"
    planted_runs().write_parquet(path)
    assert main(["sweep", "replay", "--input", str(path), "--eta", "3", "--json", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    (g,) = out["groups"]
    assert g["budget"] == 50_000 and g["inside"] is True
    assert {"compute_fraction", "wall_fraction", "search_optimum", "grid_optimum", "grid_ci"} <= set(g)


def test_the_cli_says_in_one_line_when_the_runs_have_no_curves(tmp_path, capsys):
    from elmlab.cli import main

    path = tmp_path / "runs.csv"
    planted_runs().drop("curve").write_csv(path)
    assert main(["sweep", "replay", "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no curve column" in err and "Traceback" not in err


def search_export(sweep_id: str | None = "search-1a2b3c4d") -> pl.DataFrame:
    """What `elmlab export --sweep SEARCH` gives for a search over the planted grid: the runs it let
    finish, the runs it stopped (cancelled at their rung), none of the runs it never started."""
    grid = planted_runs()
    (g,) = replay(grid, Policy(), n_boot=20)
    assert g.stopped and len(g.finished) + len(g.stopped) < grid.height  # a search, not the grid
    stopped = grid.filter(pl.col("run_id").is_in(list(g.stopped))).with_columns(
        status=pl.lit("cancelled"), steps=pl.lit(g.rungs[-1], pl.Int64), test_metric=pl.lit(None, pl.Float64),
        reason=pl.col("run_id").replace_strict(g.stopped, return_dtype=pl.String),
    )
    done = grid.filter(pl.col("run_id").is_in(list(g.finished))).with_columns(reason=pl.lit(None, pl.String))
    out = pl.concat([done, stopped])
    return out.with_columns(sweep_id=pl.lit(sweep_id)) if sweep_id else out


@pytest.mark.parametrize(
    "case,expected",
    [
        ("search", "these are the runs of a search (search-1a2b3c4d)"),
        ("pruned", "3 of 7 runs did not finish (stopped by a search: pruned)"),
        ("done only", "the allocations have different seeds (d_m 4: seeds 0; d_m 8: seeds 0, 1; d_m 16: seeds 0)"),
        ("failed", "1 of 12 runs did not finish (1 failed)"),
        ("short", "the runs trained different numbers of steps (200, 400)"),
    ],
)
def test_the_cli_refuses_what_is_not_a_full_grid_in_one_line(tmp_path, capsys, case, expected):
    from elmlab.cli import main

    if case == "search":
        df = search_export()
    elif case == "pruned":
        df = search_export(sweep_id=None)
    elif case == "done only":
        df = search_export(sweep_id=None).filter(pl.col("status") == "done")
    else:
        first = pl.col("run_id") == "r50000-4-0"
        df = planted_runs().with_columns(
            status=pl.when(first).then(pl.lit("failed")).otherwise("status") if case == "failed" else pl.col("status"),
            steps=pl.when(first).then(200).otherwise("steps") if case == "short" else pl.col("steps"),
        )
    path = tmp_path / "runs.parquet"
    df.write_parquet(path)
    assert main(["sweep", "replay", "--input", str(path), "--n-boot", "20"]) == 2
    captured = capsys.readouterr()
    line = captured.err.splitlines()[0]  # the error, then the command's usage
    assert line.startswith("elmlab sweep: error: budget 50,000: ") and expected in line
    assert "full grid, every allocation and seed trained to the end" in line
    assert "Traceback" not in captured.err and not captured.out


def test_a_search_that_trained_every_allocation_and_seed_to_the_end_is_a_full_grid(tmp_path, capsys):
    """Runs queued by a search (its sweep id) whose every allocation and seed finished (none stopped, as
    where the intervals all overlapped, or after the rest were trained by hand) replay like an iso sweep."""
    from elmlab.cli import main

    path = tmp_path / "runs.parquet"
    planted_runs().with_columns(sweep_id=pl.lit("search-1a2b3c4d")).write_parquet(path)
    assert main(["sweep", "replay", "--input", str(path), "--n-boot", "20", "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert group["budget"] == 50_000 and group["inside"] is True
