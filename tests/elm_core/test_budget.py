"""Exact parameter counts, allocation along iso-budget curves, FLOPs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elm_core import ELMConfig, ELMNetwork, allocate, breakdown, count_params, flops_per_step, iso_budget
from elm_core.budget import d_brch_for_budget, network_params, neurons_for_budget


@settings(max_examples=40, deadline=None)
@given(
    n_in=st.integers(1, 20),
    n_out=st.integers(1, 12),
    n_neurons=st.integers(1, 16),
    d_m=st.integers(1, 8),
    l_mlp=st.integers(0, 3),
    d_mlp=st.one_of(st.none(), st.integers(1, 9)),
    d_tree=st.integers(1, 6),
    d_brch=st.integers(1, 5),
    readout_d_m=st.integers(1, 4),
    tau_r=st.one_of(st.none(), st.floats(0.5, 10)),
)
def test_closed_form_equals_trainable_parameters(**kw):
    cfg = ELMConfig(**kw)
    model = ELMNetwork(cfg)
    assert count_params(cfg) == model.num_trainable()
    assert sum(breakdown(cfg).values()) == count_params(cfg)
    per_neuron = cfg.k_e + cfg.k_c
    assert cfg.k_c == cfg.d_tree * cfg.d_brch
    hidden_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("hidden."))
    assert hidden_params == cfg.n_neurons * per_neuron
    fields = ("n_neurons", "d_m", "l_mlp", "d_mlp_eff", "d_tree", "d_brch", "n_out", "readout_d_m")
    assert network_params(*(getattr(cfg, f) for f in fields)) == model.num_trainable()


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(*(st.integers(lo, hi) for lo, hi in ((1, 50), (1, 40), (0, 3), (1, 60), (1, 60), (1, 20), (1, 300)))),
        min_size=1,
        max_size=12,
    )
)
def test_closed_form_is_vectorised(rows):
    # columns: n_neurons, d_m, l_mlp, d_mlp, d_tree, d_brch, n_out; one array call = one count per row
    cols = np.array(rows).T
    counts = network_params(*cols)
    assert counts.shape == (len(rows),)
    expected = [
        count_params(ELMConfig(n_neurons=n, d_m=dm, l_mlp=lm, d_mlp=dp, d_tree=dt, d_brch=db, n_out=no))
        for n, dm, lm, dp, dt, db, no in rows
    ]
    assert counts.tolist() == expected


@settings(max_examples=40, deadline=None)
@given(budget=st.integers(5_000, 5_000_000), d_m=st.integers(1, 60), n_out=st.sampled_from([0, 1, 10, 100]))
def test_neurons_for_budget_is_the_largest_n_that_fits(budget, d_m, n_out):
    n, k_e, k_c = neurons_for_budget(budget, np.array([float(d_m)]), d_tree=16, d_brch=8, n_out=n_out)
    n = int(n[0])
    readout = network_params(0, d_m, 1, 2 * d_m, 16, 8, n_out)  # what lies outside the hidden layer
    spent = readout + n * (k_e[0] + k_c[0])
    if n > 1 or spent <= budget:
        assert spent <= budget < spent + k_e[0] + k_c[0]
    if n_out:
        try:
            cfg = allocate(budget, n_in=10, n_out=n_out, d_m=d_m, d_tree=16, d_brch=8)
        except ValueError:
            return
        assert cfg.n_neurons == n


def test_neurons_for_budget_floors_and_counts_the_readout():
    # 1024 neurons at d_m 15 cost exactly 3,516,748 with the enwik8 readout; one parameter less -> 1023
    assert neurons_for_budget(3_516_748, 15.0, n_out=204)[0] == 1024
    assert neurons_for_budget(3_516_747, 15.0, n_out=204)[0] == 1023
    # without a readout layer the whole budget is hidden: P_h = 3,211 at d_m 15
    assert neurons_for_budget(3_211 * 10 + 3_210, 15.0, n_out=0)[0] == 10


def test_d_brch_for_budget_is_the_largest_that_fits():
    cfg = ELMConfig(n_in=83, n_out=83, n_neurons=40, d_m=8, d_tree=16)
    d_brch = d_brch_for_budget(60_000, cfg)
    assert count_params(cfg.replace(d_brch=d_brch)) <= 60_000 < count_params(cfg.replace(d_brch=d_brch + 1))
    with pytest.raises(ValueError, match="even d_brch=1 needs"):
        d_brch_for_budget(1_000, cfg)


def test_equals_reference_count_for_every_published_run(reference_data):
    with open(reference_data / "paper_sweeps_enwik8.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14
    for r in rows:
        cfg = ELMConfig(
            n_in=int(r["n_out"]),
            n_out=int(r["n_out"]),
            n_neurons=int(r["N_rec"]),
            d_m=int(r["d_m"]),
            l_mlp=int(r["l_mlp"]),
            d_mlp=int(r["d_mlp"]),
            d_tree=int(r["d_tree"]),
            d_brch=int(r["d_brch"]),
            readout_d_m=int(r["readout_d_m"]),
        )
        assert count_params(cfg) == int(r["params"]), r


def test_science_md_example():
    cfg = ELMConfig(n_in=204, n_out=204, n_neurons=1024, d_m=15, d_tree=50, d_brch=15)
    assert count_params(cfg) == 3_516_748


def test_allocate_fills_the_budget_with_neurons():
    cfg = allocate(3_516_748, d_m=15, d_tree=50, d_brch=15)
    assert cfg.n_neurons == 1024 and count_params(cfg) == 3_516_748
    cfg = allocate(3_516_747, d_m=15)
    assert cfg.n_neurons == 1023
    assert count_params(cfg.replace(n_neurons=cfg.n_neurons + 1)) > 3_516_747


def test_allocate_fixed_neurons_finds_largest_d_m():
    cfg = allocate(3_515_924, n_neurons=440, d_tree=50, d_brch=15)
    assert cfg.d_m == 30 and cfg.n_neurons == 440
    assert count_params(cfg) <= 3_515_924 < count_params(cfg.replace(d_m=31))


@settings(max_examples=30, deadline=None)
@given(budget=st.integers(20_000, 5_000_000), d_m=st.integers(1, 60))
def test_allocate_is_the_largest_fit(budget, d_m):
    try:
        cfg = allocate(budget, n_in=100, n_out=100, d_m=d_m, d_tree=16, d_brch=8)
    except ValueError as exc:
        assert "minimum budget" in str(exc)
        return
    assert count_params(cfg) <= budget < count_params(cfg.replace(n_neurons=cfg.n_neurons + 1))


def test_budget_too_small_states_the_minimum():
    with pytest.raises(ValueError, match=r"minimum budget 236,155"):
        allocate(100_000, d_m=30, d_tree=50, d_brch=15)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "1e6", True])
def test_invalid_budget_is_rejected(bad):
    with pytest.raises(ValueError, match="budget"):
        allocate(bad, d_m=5)


def test_iso_budget_curve_spends_the_same_budget():
    curve = iso_budget(3_516_748, [5, 10, 15, 20, 30, 50, 100], d_tree=50, d_brch=15)
    assert [c.d_m for c in curve] == [5, 10, 15, 20, 30, 50, 100]
    counts = [count_params(c) for c in curve]
    assert all(3_400_000 < p <= 3_516_748 for p in counts)
    ns = [c.n_neurons for c in curve]
    assert ns == sorted(ns, reverse=True)  # more complex neurons -> fewer of them
    assert [c.n_neurons for c in curve if c.d_m in (15, 30)] == [1024, 440]  # the published runs


def test_iso_budget_drops_splits_that_do_not_fit():
    curve = iso_budget(300_000, [5, 300], d_tree=50, d_brch=15)
    assert [c.d_m for c in curve] == [5]
    with pytest.raises(ValueError, match="minimum budget"):
        iso_budget(1_000, [5, 300])


def test_flops_grow_with_every_axis():
    base = ELMConfig(n_neurons=100, d_m=10)
    f0 = flops_per_step(base)
    assert f0 > 0
    for change in ({"n_neurons": 200}, {"d_m": 20}, {"d_tree": 60}, {"d_brch": 20}, {"l_mlp": 2}):
        assert flops_per_step(base.replace(**change)) > f0
    # the MLP dominates: 2 * (in * out) per Linear per neuron
    h = base.hidden()
    mlp_macs = sum(i * o for i, o in h.mlp_dims) * base.n_neurons
    assert flops_per_step(base) > 2 * mlp_macs
