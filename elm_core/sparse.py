"""A layer's recurrent synapses as a sparse CSR matrix W_rec (N d_tree, N), for the layer scans (elm_core.fast).

Row (i, k) = i d_tree + k of W_rec is branch k of neuron i; column j is the activity a_{t-1} of neuron j.
Its value is input_scale times the sum of w_s over the synapses of that branch that read neuron j, so
that W_rec a_{t-1} is the recurrent part of every branch's input. Duplicate synapses (the same branch
reading the same neuron twice) share one nonzero.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from elm_core.config import LayerSpec


@dataclass(eq=False)
class SparseRec:
    """CSR structure of W_rec (N d_tree, N_src) and of its transpose, built once per connectome.

    The forward uses W_rec with d_m empty rows after each neuron's d_tree (`padded`), so that its
    product lands in a buffer that also holds the neuron's decayed memory: [W_rec a; km m] per neuron.
    """

    shape: tuple[int, int]
    crow: Tensor
    crow_pad: Tensor  # row pointers of the padded W_rec (N (d_tree + d_m), N_src)
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm_t: Tensor  # values of the transpose = values[perm_t]
    slot: Tensor  # (n_rec_synapses,) position of each recurrent synapse among the nonzeros
    syn: Tensor  # (n_rec_synapses,) flat index into w_s of each recurrent synapse

    @functools.cached_property
    def csr64(self) -> tuple[Tensor, Tensor]:
        """(crow, col) of W_rec as int64, for the native loops."""
        return self.crow.long(), self.col.long()

    @functools.cached_property
    def csr64_t(self) -> tuple[Tensor, Tensor]:
        """(crow, col) of W_rec^T as int64, for the native loops."""
        return self.crow_t.long(), self.col_t.long()

    @property
    def nnz(self) -> int:
        return self.col.shape[0]

    def matrix(self, values: Tensor) -> Tensor:
        """W_rec (N d_tree, N_src) with these nonzero values."""
        return _csr(self.crow, self.col, values, self.shape)

    def transposed(self, values: Tensor) -> Tensor:
        """W_rec^T (N_src, N d_tree)."""
        return _csr(self.crow_t, self.col_t, values[self.perm_t], self.shape[::-1])

    def padded(self, values: Tensor) -> Tensor:
        """W_rec with d_m empty rows after each neuron's d_tree (N (d_tree + d_m), N_src)."""
        return _csr(self.crow_pad, self.col, values, (self.crow_pad.shape[0] - 1, self.shape[1]))

    def sampled(self, x: Tensor, y: Tensor) -> Tensor:
        """out[e] = x[row e] . y[col e] for each nonzero e of W_rec; x (N d_tree, K), y (N_src, K).

        With x = dL/d(W_rec a) and y = a over K samples (and steps) this is the gradient of the values.
        """
        template = self.matrix(x.new_zeros(self.nnz))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.sparse.sampled_addmm(template, x, y.t(), beta=0.0).values()


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def branch_rows(spec: LayerSpec, device: torch.device) -> Tensor:
    """(N, d_s): the row (neuron i, branch k) = i d_tree + k that each synapse feeds."""
    rows = torch.arange(spec.n_neurons, device=device)[:, None] * spec.d_tree
    return rows + torch.arange(spec.d_s, device=device) // spec.d_brch


def sparse_structure(spec: LayerSpec, connectome: Tensor) -> SparseRec:
    """The CSR structure of the recurrent synapses of a layer with this connectome (N, d_s)."""
    n, n_in, n_rows = spec.n_neurons, spec.n_in, spec.n_neurons * spec.d_tree
    dev = connectome.device
    syn = torch.nonzero((connectome >= n_in).reshape(-1)).reshape(-1)
    key = branch_rows(spec, dev).reshape(-1)[syn] * n + (connectome.reshape(-1)[syn] - n_in)
    uniq, slot = torch.unique(key, sorted=True, return_inverse=True)  # duplicate synapses share a nonzero
    rows, cols = uniq // n, uniq % n
    perm_t = torch.argsort(cols * n_rows + rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=dev)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    n_pad = n * (spec.d_tree + spec.d_m)
    rows_pad = rows // spec.d_tree * (spec.d_tree + spec.d_m) + rows % spec.d_tree
    crow_pad = torch.zeros(n_pad + 1, dtype=torch.int64, device=dev)
    crow_pad[1:] = torch.cumsum(torch.bincount(rows_pad, minlength=n_pad), 0)
    crow_t = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    crow_t[1:] = torch.cumsum(torch.bincount(cols, minlength=n), 0)
    index = torch.int32 if uniq.numel() < 2**31 else torch.int64  # int32 spares a conversion per product
    return SparseRec(
        shape=(n_rows, n),
        crow=crow.to(index),
        crow_pad=crow_pad.to(index),
        col=cols.to(index),
        crow_t=crow_t.to(index),
        col_t=rows[perm_t].to(index),
        perm_t=perm_t,
        slot=slot,
        syn=syn,
    )
