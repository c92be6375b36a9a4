"""The ELM Network: fidelity to the reference vectors, an independent per-neuron oracle, state carrying."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elm_core import ELMConfig, ELMNetwork
from elm_core.interop import from_reference_npz


def _load(path):
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


# |ours - reference| allowed per vector file: (outputs: logits and activities, |x| < 3; internals: branch
# inputs, MLP outputs, memories, readouts and the final state, |x| up to 17). The README claims the outputs'
# bounds. Measured max errors, both paths: float64 outputs 1.1e-15 (logits 5.6e-16, hidden 8.9e-16),
# internals 5.3e-15; float32 outputs 4.8e-7 (logits 3.6e-7, hidden 2.4e-7), internals 1.9e-6. Each bound
# is at least twice the measured error: enough for another summation order, tight enough that one wrong
# term (or a float32 step inside the float64 path) fails.
REFERENCE_TOL = {"public_small.npz": (1e-14, 2e-14), "public_small_f32.npz": (1e-6, 5e-6)}
OUTPUTS = ("logits", "hidden", "readout")


@pytest.mark.parametrize("name", sorted(REFERENCE_TOL))
def test_reference_vectors_reproduced(reference_data, name):
    ref = _load(reference_data / name)
    model = from_reference_npz(reference_data / name)
    assert model.out.weight.dtype == torch.from_numpy(ref["out_W"]).dtype
    with torch.no_grad():
        out = model.run(torch.from_numpy(ref["x"]), trace=True)
    pairs = {
        "logits": "logits",
        "hidden": "hidden_activity",
        "readout": "L1_activity",
        "L0_branch": "L0_rec_branch",
        "L0_mlp": "L0_rec_mlp",
        "L0_memory": "L0_rec_memory",
        "L0_readout": "L0_rec_readout",
        "L0_preact": "L0_rec_preact",
        "L1_branch": "L1_rec_branch",
        "L1_memory": "L1_rec_memory",
    }
    tol_out, tol_int = REFERENCE_TOL[name]
    for ours, theirs in pairs.items():
        tol = tol_out if ours in OUTPUTS else tol_int
        np.testing.assert_allclose(out[ours].numpy(), ref[theirs], atol=tol, rtol=0, err_msg=ours)
    state = out["state"]
    for ours, theirs in (("a0", "L0_final_a"), ("m0", "L0_final_m"), ("r0", "L0_final_r"), ("m1", "L1_final_m")):
        np.testing.assert_allclose(getattr(state, ours).numpy(), ref[theirs], atol=tol_int, rtol=0, err_msg=ours)
    eps = np.finfo(ref["out_W"].dtype).eps  # the decay factors are one exp each: within 4 ulps (measured 1)
    for tag, layer in (("L0", model.hidden), ("L1", model.readout)):
        np.testing.assert_allclose(layer.kappa_m.numpy(), ref[f"{tag}_kappa_m"], rtol=4 * eps)
        np.testing.assert_allclose(layer.kappa_lam.numpy(), ref[f"{tag}_kappa_lambda"], rtol=4 * eps)


def test_reference_parameter_count_matches_file(reference_data):
    import json

    ref = _load(reference_data / "public_small.npz")
    meta = json.loads(str(ref["config"]))
    assert from_reference_npz(reference_data / "public_small.npz").num_trainable() == meta["total_trainable_params"]


def test_missing_reference_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        from_reference_npz(tmp_path / "nope.npz")


def oracle(model: ELMNetwork, x: np.ndarray) -> np.ndarray:
    """Logits by a literal reading of docs/science.md section 2: loops over samples, steps and neurons."""

    def layer_params(layer):
        s = layer.spec
        return dict(
            s=s,
            C=layer.connectome.numpy(),
            w_s=layer.w_s.detach().double().numpy(),
            W=[w.detach().double().numpy() for w in layer.mlp_w],
            bb=[b.detach().double().numpy() for b in layer.mlp_b],
            w_y=layer.w_y.detach().double().numpy(),
            b=layer.b.detach().double().numpy(),
            km=np.exp(-1.0 / layer.tau_m.double().numpy()),
            kl=np.exp(-s.lam / layer.tau_m.double().numpy()),
            kr=math.exp(-1.0 / s.tau_r) if s.tau_r else 0.0,
        )

    def neuron_step(p, i, z, m, r):
        s = p["s"]
        syn = p["w_s"][i] * z[p["C"][i]]
        beta = s.input_scale * np.array([syn[k * s.d_brch : (k + 1) * s.d_brch].sum() for k in range(s.d_tree)])
        md = p["km"][i] * m
        h = np.concatenate([beta, md])
        for k in range(len(p["W"])):
            h = p["W"][k][i] @ h + p["bb"][k][i]
            if k < len(p["W"]) - 1:
                h = np.maximum(h, 0) ** 2
        m = md + (1 - p["kl"][i]) * 1.7159 * np.tanh(2 / 3 * h)
        o = p["w_y"][i] @ m
        if s.tau_r:
            r = p["kr"] * r + (1 - p["kr"]) * o
            o = o - r
        pre = o + p["b"][i]
        return (max(pre, 0.0) if s.activation == "relu" else pre), m, r

    layers = [layer_params(model.hidden), layer_params(model.readout)]
    W_out, b_out = model.out.weight.detach().double().numpy(), model.out.bias.detach().double().numpy()
    B, T, _ = x.shape
    logits = np.zeros((B, T, W_out.shape[0]))
    for bi in range(B):
        st = [
            (np.zeros(p["s"].n_neurons), np.zeros((p["s"].n_neurons, p["s"].d_m)), np.zeros(p["s"].n_neurons))
            for p in layers
        ]
        for t in range(T):
            u = x[bi, t]
            for li, p in enumerate(layers):
                a_prev, m_all, r_all = st[li]
                z = np.concatenate([u, a_prev])
                a_new, m_new, r_new = np.zeros_like(a_prev), np.zeros_like(m_all), np.zeros_like(r_all)
                for i in range(p["s"].n_neurons):
                    a_new[i], m_new[i], r_new[i] = neuron_step(p, i, z, m_all[i], r_all[i])
                st[li] = (a_new, m_new, r_new)
                u = a_new
            logits[bi, t] = W_out @ u + b_out
    return logits


@pytest.mark.parametrize(
    "changes",
    [
        {"l_mlp": 0},
        {"l_mlp": 1},
        {"l_mlp": 2, "d_mlp": 5},
        {"l_mlp": 3, "d_mlp": 7},
        {"readout_d_m": 2},
        {"tau_r": None},
        {"p_rec": 1.0, "tau_min": 2.0, "tau_max": 30.0, "lam": 3.0, "input_scale": 4.0},
    ],
)
def test_matches_per_neuron_oracle(changes):
    cfg = ELMConfig(n_in=5, n_out=4, n_neurons=6, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3).replace(**changes)
    model = ELMNetwork(cfg, dtype=torch.float64)
    with torch.no_grad():
        model.hidden.b.uniform_(-0.3, 0.3)  # b = 0 at init; make it matter
        model.readout.b.uniform_(-0.5, 0.5)
    x = np.random.default_rng(0).normal(0, 0.5, size=(2, 7, 5))
    with torch.no_grad():
        ours = model(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(ours, oracle(model, x), atol=1e-10)


def test_state_carries_a_sequence_split_in_two():
    model = ELMNetwork(ELMConfig(n_in=7, n_out=7, n_neurons=12, d_m=4, d_tree=4, d_brch=3, seed=1), dtype=torch.float64)
    x = torch.randint(0, 7, (3, 20))
    with torch.no_grad():
        whole, s_whole = model(x)
        first, s = model(x[:, :9])
        second, s2 = model(x[:, 9:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=1e-12, rtol=0)
    for a, b in zip(s2.tensors(), s_whole.tensors(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_tokens_are_one_hot_times_three():
    model = ELMNetwork(ELMConfig(n_in=9, n_out=9, n_neurons=8, d_m=2, d_tree=2, d_brch=2))
    tokens = torch.randint(0, 9, (2, 6))
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(3.0 * torch.nn.functional.one_hot(tokens, 9).float())
    torch.testing.assert_close(a, b)


def test_wrong_input_shape_is_a_clear_error():
    model = ELMNetwork(ELMConfig(n_in=9, n_out=9, n_neurons=8, d_m=2, d_tree=2, d_brch=2))
    with pytest.raises(ValueError, match=r"\(B, T, 9\)"):
        model(torch.zeros(2, 3, 4))


def test_initialisation_follows_the_reference_statistics():
    cfg = ELMConfig(n_in=50, n_out=10, n_neurons=200, d_m=6, d_tree=10, d_brch=9, p_rec=0.8, seed=0)
    model = ELMNetwork(cfg)
    c = model.hidden.connectome
    frac_rec = (c >= cfg.n_in).float().mean().item()
    assert abs(frac_rec - 0.8) < 0.01
    assert c.min() >= 0 and c.max() < cfg.n_in + cfg.n_neurons
    assert model.readout.connectome.max() < cfg.n_neurons  # readout: feed-forward only
    assert model.hidden.w_s.abs().max() <= 1 / 3 + 1e-6  # U(+-1/sqrt(d_brch))
    assert model.hidden.w_s.std().item() == pytest.approx(1 / 3 / math.sqrt(3), rel=0.05)
    assert torch.all(model.hidden.b == 0)
    tau = model.hidden.tau_m[0].double()
    np.testing.assert_allclose(tau.numpy(), np.logspace(-1, 2, 6), rtol=1e-5)
    assert not any(n.startswith("hidden.tau") for n, _ in model.named_parameters())


def test_same_seed_same_network_other_seed_other_network():
    cfg = ELMConfig(n_in=5, n_out=5, n_neurons=8, d_m=2, d_tree=2, d_brch=2, seed=4)
    a, b, c = ELMNetwork(cfg), ELMNetwork(cfg), ELMNetwork(cfg.replace(seed=5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.hidden.w_s, c.hidden.w_s)


def test_gradients_match_finite_differences():
    cfg = ELMConfig(n_in=3, n_out=3, n_neurons=4, d_m=2, d_tree=2, d_brch=2, l_mlp=2, d_mlp=3, seed=2)
    model = ELMNetwork(cfg, dtype=torch.float64)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    # each of these parameter tensors in turn, the others held fixed
    for p in (model.hidden.w_s, model.hidden.mlp_w[0], model.hidden.mlp_b[1], model.hidden.w_y, model.readout.w_s):
        q = p.detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda q, p=p: _with_param(model, p, q, x), (q,), eps=1e-6, atol=1e-5)


def _with_param(model, p, q, x):
    name = next(n for n, t in model.named_parameters() if t is p)
    return torch.func.functional_call(model, {name: q}, (x,))[0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_neurons", 0),
        ("d_m", -1),
        ("d_tree", 2.5),
        ("p_rec", 1.5),
        ("p_rec", float("nan")),
        ("tau_max", 0.05),
        ("tau_min", float("nan")),
        ("l_mlp", -1),
        ("d_mlp", 0),
        ("tau_r", -2.0),
        ("input_dropout", 1.0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ELMConfig(**{field: value})


def test_config_round_trips_through_a_dict():
    cfg = ELMConfig(n_in=10, n_out=10, n_neurons=33, d_m=7, tau_r=None, d_mlp=9)
    assert ELMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        ELMConfig.from_dict({**cfg.to_dict(), "bogus": 1})
