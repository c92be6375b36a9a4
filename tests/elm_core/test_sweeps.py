"""elm_core.sweeps: families of run specs with one sweep id."""

from __future__ import annotations

import pytest

from elm_core.spec import RunSpec
from elm_core.sweeps import axis_sweep, iso_sweep, ladder_sweep


def test_iso_sweep_one_budget_each_d_m_and_seed():
    specs = iso_sweep("text", 60_000, [2, 4, 8], seeds=[0, 1], preset="small", steps=10)
    assert all(isinstance(s, RunSpec) for s in specs)
    assert [(s.d_m, s.seed) for s in specs] == [(2, 0), (2, 1), (4, 0), (4, 1), (8, 0), (8, 1)]
    assert {s.budget for s in specs} == {60_000} and {s.steps for s in specs} == {10}
    assert all(s.n_neurons is None for s in specs)  # the budget decides N
    sweep_ids = {s.sweep_id for s in specs}
    assert len(sweep_ids) == 1 and sweep_ids.pop().startswith("iso-")
    assert iso_sweep("text", 6e4, [2], sweep_id="mine")[0].sweep_id == "mine"


def test_ladder_sweep_one_or_several_allocations():
    specs = ladder_sweep("text", [2e4, 6e4], 8, seeds=2)
    assert [(s.budget, s.d_m, s.seed) for s in specs] == [(20_000, 8, 2), (60_000, 8, 2)]
    assert specs[0].sweep_id == specs[1].sweep_id and specs[0].sweep_id.startswith("ladder-")
    several = ladder_sweep("text", [2e4, 6e4], [4, 8], [0])  # the dashboard's positional call
    assert [(s.budget, s.d_m) for s in several] == [(20_000, 4), (20_000, 8), (60_000, 4), (60_000, 8)]
    assert len(ladder_sweep("text", [2e4], d_m_values=[4, 8])) == 2
    with pytest.raises(ValueError, match="d_m"):
        ladder_sweep("text", [2e4])


def test_axis_sweep_varies_one_axis():
    specs = axis_sweep("text", "d_tree", [4, 8, 16], n_neurons=32, d_m=8, seeds=[0, 1])
    assert [(s.d_tree, s.seed) for s in specs][:3] == [(4, 0), (4, 1), (8, 0)]
    assert {(s.n_neurons, s.d_m) for s in specs} == {(32, 8)} and specs[0].sweep_id.startswith("axis-")
    at_budget = axis_sweep("text", "d_m", [2, 4], budget=60_000)
    assert [(s.d_m, s.budget, s.n_neurons) for s in at_budget] == [(2, 60_000, None), (4, 60_000, None)]


def test_invalid_sweeps_name_the_field():
    with pytest.raises(ValueError, match="axis"):
        axis_sweep("text", "width", [1], n_neurons=4, d_m=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget"):
        iso_sweep("text", -5, [2])
    with pytest.raises(ValueError, match="d_m"):
        iso_sweep("text", 6e4, [0])
    with pytest.raises(ValueError, match="seeds"):
        iso_sweep("text", 6e4, [2], seeds=[1, 1])
    with pytest.raises(ValueError, match="d_m_values"):
        iso_sweep("text", 6e4, [])
    with pytest.raises(ValueError, match="n_neurons"):
        iso_sweep("text", 6e4, [2], n_neurons=5)
    with pytest.raises(ValueError, match="steps"):
        iso_sweep("text", 6e4, [2], steps=0)


def test_screen_skips_designs_off_the_curve_with_the_reason():
    from elm_core.sweeps import N_MIN, screen

    specs = iso_sweep("text", 50_000, [2, 8, 64], preset="small")
    kept, skipped = screen(specs, n_in=83, n_out=83)
    assert [s.d_m for s in kept] == [2, 8]
    ((spec, why),) = skipped
    assert spec.d_m == 64 and "N 1" in why and f"floor of {N_MIN}" in why


def test_screen_skips_a_design_that_leaves_the_budget_unspent():
    from elm_core.sweeps import design_problem

    assert design_problem(20, 84_000, 100_000) is not None and "84%" in design_problem(20, 84_000, 100_000)
    assert design_problem(20, 96_000, 100_000) is None
    assert design_problem(20, 50_000, None) is None  # no budget: nothing to spend
