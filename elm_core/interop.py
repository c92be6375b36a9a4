"""Load the reference implementation's test vectors (elm_core/reference_data/FORMAT.md) into an ELMNetwork.

A port cannot reproduce JAX's random streams, so every array is loaded: connectome, w_s, MLP,
w_y, b, tau_m and the output Linear. The layer geometry comes from the file's `resolved_layers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elm_core.config import ELMConfig, LayerSpec
from elm_core.model import TOKEN_SCALE, ELMNetwork


def _layer_spec(layer: dict[str, Any]) -> LayerSpec:
    nc = layer["neuron"]
    if not nc.get("lambda_as_timescale_ratio", True):
        raise ValueError("only lambda_as_timescale_ratio=True is supported")
    if nc.get("branch_tau") is not None:
        raise ValueError("branch traces (branch_tau) are not part of the ELM Network")
    return LayerSpec(
        n_in=int(layer["num_input"]),
        n_neurons=int(layer["num_neuron"]),
        d_m=int(nc["num_memory"]),
        l_mlp=int(nc["mlp_num_hidden_layer"]),
        d_mlp=int(nc["mlp_num_hidden_units"]),
        d_tree=int(nc["num_branch"]),
        d_brch=int(nc["num_synapse_per_branch"]),
        p_rec=float(layer.get("input_wiring_args", {}).get("recurrent_connect", 0.0)),
        input_scale=float(nc["input_scale"]),
        lam=float(nc["lambda_value"]),
        tau_min=float(nc["memory_tau_min"]),
        tau_max=float(nc["memory_tau_max"]),
        tau_r=None if nc.get("high_pass_tau") is None else float(nc["high_pass_tau"]),
        activation="relu" if nc.get("neuron_activation", "relu") == "relu" else "identity",
        dt=float(nc.get("delta_t", 1.0)),
        tau_range_scale=float(nc.get("memory_tau_range_scale", 10.0)),
    )


def _embed_scale(kwargs: dict[str, Any]) -> float:
    args = kwargs.get("input_embedding_args") or {}
    for key, val in args.items():
        if "scale" in key and isinstance(val, (int, float)):
            return float(val)
    return TOKEN_SCALE


def from_reference_npz(path: str | Path) -> ELMNetwork:
    """An ELMNetwork holding exactly the arrays of a reference vector file, in the file's dtype."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference vector file not found: {path}")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["config"]))
    hidden, readout = (_layer_spec(layer) for layer in meta["resolved_layers"])
    num_output = int(meta.get("num_output", meta["model_kwargs"]["num_output"]))
    cfg = ELMConfig(
        n_in=hidden.n_in,
        n_out=num_output,
        n_neurons=hidden.n_neurons,
        d_m=hidden.d_m,
        l_mlp=hidden.l_mlp,
        d_mlp=hidden.d_mlp,
        d_tree=hidden.d_tree,
        d_brch=hidden.d_brch,
        p_rec=hidden.p_rec,
        input_scale=hidden.input_scale,
        lam=hidden.lam,
        tau_min=hidden.tau_min,
        tau_max=hidden.tau_max,
        tau_r=hidden.tau_r,
        readout_d_m=readout.d_m,
    )
    model = ELMNetwork(cfg, layers=(hidden, readout), dtype=torch.from_numpy(arrays["out_W"]).dtype)
    model.embed_scale = _embed_scale(meta["model_kwargs"])

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arrays[name]))

    with torch.no_grad():
        for tag, layer in (("L0", model.hidden), ("L1", model.readout)):
            layer.connectome.copy_(t(f"{tag}_connectome").long())
            layer.w_s.copy_(t(f"{tag}_w_s"))
            for k in range(len(layer.mlp_w)):
                layer.mlp_w[k].copy_(t(f"{tag}_mlp_W{k}"))
                layer.mlp_b[k].copy_(t(f"{tag}_mlp_b{k}"))
            layer.w_y.copy_(t(f"{tag}_w_y").reshape(layer.w_y.shape))
            layer.b.copy_(t(f"{tag}_b").reshape(layer.b.shape))
            layer.tau_m.copy_(t(f"{tag}_tau_m"))
            layer.update_kappas()
        model.out.weight.copy_(t("out_W"))
        model.out.bias.copy_(t("out_b"))
    return model
