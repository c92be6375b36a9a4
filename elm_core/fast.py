"""The ELM Network's fast path: whole-sequence layer scans with a hand-written backward through time.

Same computation as `ELMLayer.step` (reference/FORMAT.md, "Exact per-step computation"), reorganised:

1. The synapses and the first MLP layer are linear in z_t = concat(u_t, a_{t-1}), so they fold into
   one matrix F (N * d1, I + N) = blockdiag(W_0[:, :, :d_tree]) @ W_syn, built once per forward from
   w_s (W_syn[(i, k), c] = input_scale * sum of w_s over the synapses of branch k of neuron i that
   read source c). Its feed-forward columns act on the whole sequence in one matrix product (one row
   gather for token input); only the recurrent columns M run inside the time loop.
   When M would be large (many neurons), the recurrent synapses instead stay a sparse (CSR) matrix
   W_rec (N * d_tree, N) and the first layer's branch block W_0b is applied per step ("sparse" mode).
2. `_LayerScan` runs one layer over all T steps without building an autograd graph. Its backward
   walks t = T-1..0 carrying only the state gradients (activity, memory, high-pass); every weight
   gradient is a sum over (t, b) of outer products and is formed after the loop by a few large
   batched matrix products.
3. A layer without recurrent synapses and without a high-pass (the readout layer) only carries its
   memory through the loop; its readout o_t and activity are computed for all steps at once.

Layout inside the scan: feature-first with the batch last, e.g. the memory of step t is m[t] (N, d_m, B),
so that the per-neuron MLP is one `bmm` with the neuron axis as the batch of matrices.
The tanh slope 2/3 is folded into the last MLP layer and the gain 1.7159 into c = (1 - kappa_lam) 1.7159.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

if TYPE_CHECKING:
    from elm_core.model import ELMLayer, ELMNetwork

TANH_GAIN, TANH_SLOPE = 1.7159, 2.0 / 3.0

# The recurrent part of F is kept dense (fused with the first MLP layer) while it is at most this many
# elements; larger layers use the sparse recurrent matrix.
FUSED_MAX_ELEMENTS = 2**21
# The time loops run their small per-step operations on this many threads (None: torch's setting).
# One thread avoids waiting on a second, busy core at every one of the thousands of per-step kernels.
SCAN_THREADS: int | None = 1


@contextmanager
def _scan_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    if SCAN_THREADS is None or before <= SCAN_THREADS:
        yield
        return
    torch.set_num_threads(SCAN_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(eq=False)
class _ScanCtx:
    """What a layer scan needs besides its differentiable inputs."""

    km: Tensor  # (N, d_m, 1) kappa_m
    c: Tensor  # (N, d_m, 1) (1 - kappa_lam) * TANH_GAIN
    kr: float | None  # kappa_r, None = no high-pass
    relu: bool
    in_loop: bool  # compute o, r, a inside the loop (recurrent synapses or high-pass)
    mode: str  # "fused" (dense M), "sparse" (CSR W_rec and W_0b), "none" (no recurrent synapses)
    rec_mask: Tensor | None  # (N_src, B) recurrent dropout mask, or None
    sparse: _SparseRec | None = None
    tokens: Tensor | None = None  # (T, B) token input: the drive of step t is table[tokens[t]]


# --- recurrent synapses as a sparse matrix --------------------------------------------------------
@dataclass(eq=False)
class _SparseRec:
    """CSR structure of W_rec (N * d_tree, N_src) and of its transpose, built once per connectome."""

    shape: tuple[int, int]
    crow: Tensor
    col: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm_t: Tensor  # values of the transpose = values[perm_t]
    slot: Tensor  # (n_rec_synapses,) position of each recurrent synapse among the nonzeros
    syn: Tensor  # (n_rec_synapses,) flat index into w_s of each recurrent synapse
    rows: Tensor  # (nnz,) row of each nonzero
    cols: Tensor  # (nnz,) column of each nonzero

    def matrices(self, values: Tensor) -> tuple[Tensor, Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)
            wt = torch.sparse_csr_tensor(
                self.crow_t, self.col_t, values[self.perm_t], self.shape[::-1], check_invariants=False
            )
        return w, wt


def _sparse_structure(layer: ELMLayer) -> _SparseRec:
    s = layer.spec
    conn = layer.connectome
    n, n_in = s.n_neurons, s.n_in
    row = torch.arange(n, device=conn.device)[:, None] * s.d_tree + torch.arange(s.d_s, device=conn.device) // s.d_brch
    is_rec = (conn >= n_in).reshape(-1)
    syn = torch.nonzero(is_rec).reshape(-1)
    r = row.reshape(-1)[syn]
    c = conn.reshape(-1)[syn] - n_in
    n_rows = n * s.d_tree
    key = r * n + c
    uniq, slot = torch.unique(key, sorted=True, return_inverse=True)
    rows, cols = uniq // n, uniq % n
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=conn.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    key_t = cols * n_rows + rows
    perm_t = torch.argsort(key_t)
    crow_t = torch.zeros(n + 1, dtype=torch.int64, device=conn.device)
    crow_t[1:] = torch.cumsum(torch.bincount(cols, minlength=n), 0)
    return _SparseRec(
        shape=(n_rows, n),
        crow=crow,
        col=cols.contiguous(),
        crow_t=crow_t,
        col_t=rows[perm_t].contiguous(),
        perm_t=perm_t,
        slot=slot,
        syn=syn,
        rows=rows,
        cols=cols,
    )


# --- the scan -------------------------------------------------------------------------------------
def _bmm_add(z: Tensor, w: Tensor, h: Tensor, owned: bool) -> Tensor:
    """z + w @ h for stacks of small matrices (N, o, i) @ (N, i, B), by the fastest route for the size.

    `owned`: z is a temporary that may be overwritten.
    """
    if h.shape[1] <= 4:  # tiny contraction (the readout's memory): a few element-wise multiply-adds
        out = torch.addcmul(z, w[:, :, :1], h[:, None, 0])
        for q in range(1, h.shape[1]):
            out.addcmul_(w[:, :, q : q + 1], h[:, None, q])
        return out
    if h.shape[2] >= 16:  # MKL's beta = 1 path wins for wider batches
        return z.baddbmm_(w, h) if owned else torch.baddbmm(z, w, h)
    return torch.bmm(w, h).add_(z)


def _bmm_t(w: Tensor, g: Tensor) -> Tensor:
    """w^T @ g for stacks of small matrices: w (N, o, i), g (N, o, B) -> (N, i, B)."""
    if w.shape[1] <= 4:
        out = w[:, :1].transpose(1, 2) * g[:, None, 0]
        for q in range(1, w.shape[1]):
            out.addcmul_(w[:, q : q + 1].transpose(1, 2), g[:, None, q])
        return out
    return torch.bmm(w.transpose(1, 2), g)


class _LayerScan(torch.autograd.Function):
    """One ELM layer over T steps. Inputs (feature-first, batch last):

    the feed-forward drive of the first MLP layer, its bias included, either P (T, N * d1, B) or,
    for token input, a table (I, N * d1) whose row tokens[t, b] is the drive of sample b at step t;
    R: "fused" M (N * d1, N_src) | "sparse" nonzero values of W_rec | "none" None;
    W0 (N, d1, d_tree + d_m) the first MLP layer (in "fused" and "none" mode only its memory block
    is used here, the branch block being folded into the drive and M); w_y (N, d_m); b (N,);
    a0 (N_src, B), m0 (N, d_m, B), r0 (N, B); then W_1, b_1, ..., W_L, b_L (b_k as (N, out, 1)),
    the last layer already scaled by the tanh slope.
    Returns (a (T, N, B), m (T, N, d_m, B), r_T (N, B)) when o, r, a run in the loop, else (m,).
    Only relu(z) of the hidden MLP layers, tanh(u), m and a are kept for the backward.
    """

    @staticmethod
    def forward(ctx, *args):
        with _scan_threads():
            return _LayerScan._forward(ctx, *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        with _scan_threads():
            return _LayerScan._backward(ctx, *grads)

    @staticmethod
    def _forward(ctx, k: _ScanCtx, P, table, R, W0, w_y, b, a0, m0, r0, *wb):  # noqa: N803
        steps, batch = (P.shape[0], P.shape[2]) if P is not None else k.tokens.shape
        n, d1, _ = W0.shape
        d_m = m0.shape[1]
        d_tree = W0.shape[2] - d_m
        W0m = W0[:, :, d_tree:]
        Ws, bs = wb[0::2], wb[1::2]
        n_hidden = len(Ws)  # l_mlp
        new = W0.new_empty
        m_out = new(steps, n, d_m, batch)
        th_all = new(steps, n, d_m, batch)
        Z = [new(steps, n, w.shape[2], batch) for w in Ws]  # relu(z_j), j < l_mlp
        if k.mode == "sparse":
            w_rec, _ = k.sparse.matrices(R)
        a_out = new(steps, n, batch) if k.in_loop else None
        wyc = w_y.unsqueeze(-1)  # (N, d_m, 1)
        bcol = b.unsqueeze(1)
        r = r0
        m = m0
        a_in = a0 if k.rec_mask is None else a0 * k.rec_mask
        for t in range(steps):
            md = k.km * m  # (N, d_m, B)
            if P is not None:
                drive, owned = P[t].view(n, d1, batch), False
            else:
                drive, owned = table.index_select(0, k.tokens[t]).t().view(n, d1, batch), True
            if k.mode == "fused":
                z = torch.addmm(drive.view(n * d1, batch), R, a_in).view(n, d1, batch)
                z = _bmm_add(z, W0m, md, True)
            elif k.mode == "sparse":
                br = (w_rec @ a_in).view(n, d_tree, batch)
                z = _bmm_add(drive, W0, torch.cat((br, md), 1), owned)
            else:
                z = _bmm_add(drive, W0m, md, owned)
            for j in range(n_hidden):
                h = torch.clamp_min(z, 0, out=Z[j][t])  # relu(z_j)
                z = _bmm_add(bs[j], Ws[j], h * h, False)
            th = torch.tanh(z, out=th_all[t])
            m = torch.addcmul(md, k.c, th, out=m_out[t])  # (N, d_m, B)
            if k.in_loop:
                o = (m * wyc).sum(1)  # (N, B)
                if k.kr is not None:
                    r = torch.lerp(r, o, 1 - k.kr)
                    o = o - r
                pre = o.add_(bcol)
                a = torch.clamp_min(pre, 0, out=a_out[t]) if k.relu else a_out[t].copy_(pre)
                a_in = a if k.rec_mask is None else a * k.rec_mask
        ctx.set_materialize_grads(False)
        ctx.k = k
        ctx.n_hidden = n_hidden
        ctx.shapes = (P is not None, table.shape if table is not None else None)
        ctx.save_for_backward(R, W0, w_y, a0, m0, m_out, th_all, a_out, *Z, *Ws)
        if k.in_loop:
            return a_out, m_out, r
        return (m_out,)

    @staticmethod
    def _backward(ctx, *grads):
        k: _ScanCtx = ctx.k
        n_hidden = ctx.n_hidden
        has_P, table_shape = ctx.shapes
        R, W0, w_y, a0, m0, m_out, th_all, a_out, *rest = ctx.saved_tensors
        Z, Ws = rest[:n_hidden], rest[n_hidden:]
        if k.in_loop:
            g_a, g_m, g_r = grads
        else:
            (g_m,), g_a, g_r = grads, None, None
        steps, n, d_m, batch = m_out.shape
        d1 = W0.shape[1]
        d_tree = W0.shape[2] - d_m
        W0m = W0[:, :, d_tree:]
        new = m_out.new_zeros

        WsT2 = [w.transpose(1, 2) * 2 for w in Ws]  # the 2 of d relu(z)^2 / dz = 2 relu(z)
        # weight gradients, accumulated over the steps: per neuron, sums over b of outer products;
        # bias-like gradients accumulate per (neuron, b) and are summed over b at the end
        g_W0 = new(W0.shape)
        g_W0m = g_W0[:, :, d_tree:]
        g_Ws = [new(w.shape) for w in Ws]
        acc_bs = [new(w.shape[0], w.shape[1], batch) for w in Ws]
        g_P = m_out.new_empty(steps, n * d1, batch) if has_P else None
        g_table = new(table_shape) if table_shape is not None else None
        g_R = None
        if k.mode == "fused":
            MT = R.t()
            g_R = new(R.shape)
        elif k.mode == "sparse":
            w_rec, w_rec_t = k.sparse.matrices(R)
            template, _ = k.sparse.matrices(torch.zeros_like(R))
            g_R = new(R.shape)
        g_wy = g_b = None
        if k.in_loop:
            mask = (a_out > 0).to(m_out.dtype) if k.relu else None
            wyc = w_y.unsqueeze(-1)  # (N, d_m, 1)
            acc_wy = new(n, d_m, batch)
            acc_b = new(n, batch)
            dr = None
            if k.kr is not None:
                dr = g_r.clone() if g_r is not None else new(n, batch)
        da = None
        dm = new(n, d_m, batch)
        rec_src = k.mode != "none"
        for t in range(steps - 1, -1, -1):
            m_prev = m_out[t - 1] if t > 0 else m0
            if k.in_loop:
                if da is None:
                    da_t = g_a[t] if g_a is not None else new(n, batch)
                else:
                    da_t = da if g_a is None else da.add_(g_a[t])
                dpre = da_t * mask[t] if mask is not None else da_t
                acc_b.add_(dpre)
                if k.kr is not None:
                    dd = dr - dpre
                    do = torch.add(dpre, dd, alpha=1 - k.kr)
                    dr = dd.mul_(k.kr)
                else:
                    do = dpre
                do3 = do.unsqueeze(1)  # (N, 1, B)
                acc_wy.addcmul_(m_out[t], do3)
                dm = torch.addcmul(dm, wyc, do3)
            if g_m is not None:
                dm = dm + g_m[t]
            th = th_all[t]
            d_u = torch.addcmul(k.c, k.c * th, th, value=-1)  # d m_t / d u = c (1 - tanh^2) (slope folded)
            if n_hidden == 0 and has_P:
                g = torch.mul(dm, d_u, out=g_P[t].view(n, d1, batch))
            else:
                g = d_u.mul_(dm)
            for j in range(n_hidden, 0, -1):
                h = Z[j - 1][t]  # relu(z_{j-1})
                g_Ws[j - 1].baddbmm_(g, (h * h).transpose(1, 2))
                acc_bs[j - 1].add_(g)
                dh = torch.bmm(WsT2[j - 1], g)
                g = torch.mul(dh, h, out=g_P[t].view(n, d1, batch)) if (j == 1 and has_P) else dh.mul_(h)
            # g: gradient of the first MLP layer's output z0 (N, d1, B)
            g2 = g.view(n * d1, batch)
            if g_table is not None:
                g_table.index_add_(0, k.tokens[t], g2.t())
            md = k.km * m_prev
            if rec_src:
                a_prev = (a_out[t - 1] if t > 0 else a0) if a_out is not None else a0
                if k.rec_mask is not None:
                    a_prev = a_prev * k.rec_mask
            if k.mode == "sparse":
                br = (w_rec @ a_prev).view(n, d_tree, batch)  # recomputed rather than kept
                g_W0.baddbmm_(g, torch.cat((br, md), 1).transpose(1, 2))
                dh0 = torch.bmm(W0.transpose(1, 2), g)  # (N, d_tree + d_m, B)
                dm = dh0[:, d_tree:].add_(dm).mul_(k.km)
                dbr = dh0[:, :d_tree].reshape(n * d_tree, batch)
                g_R.add_(_sampled(template, dbr, a_prev))
                da = torch.mm(w_rec_t, dbr)
            else:
                g_W0m.baddbmm_(g, md.transpose(1, 2))
                dm = _bmm_t(W0m, g).add_(dm).mul_(k.km)
                if k.mode == "fused":
                    g_R.addmm_(g2, a_prev.t())
                    da = torch.mm(MT, g2)
            if da is not None and k.rec_mask is not None:
                da = da.mul_(k.rec_mask)
        g_wb = []
        for gw, gb in zip(g_Ws, acc_bs, strict=True):
            g_wb += [gw, gb.sum(2, keepdim=True)]
        g_a0 = g_r0 = None
        if k.in_loop:
            g_wy = acc_wy.sum(2)
            g_b = acc_b.sum(1)
            g_r0 = dr if k.kr is not None else g_r  # without a high-pass r passes through unchanged
        if rec_src:
            g_a0 = da
        return (None, g_P, g_table, g_R, g_W0, g_wy, g_b, g_a0, dm, g_r0, *g_wb)


def _sampled(template: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """out[e] = x[rows[e]] . y[cols[e]] for each nonzero e of the CSR `template` (the gradient of its values)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse.sampled_addmm(template, x, y.t(), beta=0.0).values()


# --- per-layer set-up (autograd ops, once per forward) ---------------------------------------------
def _layer_weights(layer: ELMLayer) -> tuple[list[Tensor], list[Tensor]]:
    """MLP weights and biases with the tanh slope folded into the last layer."""
    ws, bs = list(layer.mlp_w), list(layer.mlp_b)
    ws[-1] = ws[-1] * TANH_SLOPE
    bs[-1] = bs[-1] * TANH_SLOPE
    return ws, bs


def _has_rec(layer: ELMLayer) -> bool:
    return bool((layer.connectome >= layer.spec.n_in).any())


def _syn_matrix(layer: ELMLayer, lo: int, hi: int) -> Tensor:
    """W_syn restricted to sources [lo, hi): (N, d_tree, hi - lo), input_scale included."""
    s = layer.spec
    conn = layer.connectome
    dev = conn.device
    row = torch.arange(s.n_neurons, device=dev)[:, None] * s.d_tree + torch.arange(s.d_s, device=dev) // s.d_brch
    width = hi - lo
    sel = (conn >= lo) & (conn < hi)
    flat = (row * width + (conn - lo)).masked_select(sel)
    vals = (layer.w_s * s.input_scale).masked_select(sel)
    w = vals.new_zeros(s.n_neurons * s.d_tree * width).index_add(0, flat, vals)
    return w.view(s.n_neurons, s.d_tree, width)


class _Plan:
    """Mode and sparse structure of a layer, cached for its connectome."""

    def __init__(self, layer: ELMLayer) -> None:
        s = layer.spec
        self.key = (layer.connectome.data_ptr(), layer.connectome._version, layer.connectome.device)
        self.has_rec = _has_rec(layer)
        d1 = layer.mlp_w[0].shape[1]
        if not self.has_rec:
            self.mode = "none"
        elif s.n_neurons * d1 * s.n_neurons <= FUSED_MAX_ELEMENTS:
            self.mode = "fused"
        else:
            self.mode = "sparse"
        self.sparse = _sparse_structure(layer) if self.mode == "sparse" else None


def _plan(layer: ELMLayer) -> _Plan:
    key = (layer.connectome.data_ptr(), layer.connectome._version, layer.connectome.device)
    plan = getattr(layer, "_fast_plan", None)
    if plan is None or plan.key != key:
        plan = _Plan(layer)
        layer._fast_plan = plan
    return plan


def scan_layer(
    layer: ELMLayer,
    a0: Tensor,
    m0: Tensor,
    r0: Tensor,
    rec_mask: Tensor | None,
    *,
    u: Tensor | None = None,
    tokens: Tensor | None = None,
    token_scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run `layer` over a sequence, fed either by a dense input u (T, I, B) or by tokens (T, B)
    (the input token_scale * one_hot(tokens)).

    Returns the activity (T, N, B), the memory (T, N, d_m, B) and the final high-pass state (N, B).
    """
    s = layer.spec
    plan = _plan(layer)
    n = s.n_neurons
    ws, bs = _layer_weights(layer)
    d1 = ws[0].shape[1]
    W0b = ws[0][:, :, : s.d_tree]
    n_in = s.n_in
    if plan.mode == "fused":
        Fm = torch.bmm(W0b, _syn_matrix(layer, 0, n_in + n)).view(n * d1, n_in + n)
        F_ff, R = Fm[:, :n_in], Fm[:, n_in:].contiguous()
    else:
        F_ff = torch.bmm(W0b, _syn_matrix(layer, 0, n_in)).view(n * d1, n_in)
        R = None
        if plan.mode == "sparse":
            sp = plan.sparse
            w_rec = (layer.w_s * s.input_scale).reshape(-1)[sp.syn]
            R = w_rec.new_zeros(sp.col.shape[0]).index_add(0, sp.slot, w_rec)
    b0 = bs[0].reshape(n * d1)
    P = table = None
    if tokens is not None:
        table = torch.addcmul(b0, F_ff.t(), torch.tensor(token_scale, dtype=b0.dtype, device=b0.device))
    else:
        P = torch.matmul(F_ff, u) + b0.unsqueeze(-1)  # (T, N d1, B)
    kappa_r = float(layer.kappa_r) if s.tau_r is not None else None
    in_loop = plan.has_rec or kappa_r is not None
    k = _ScanCtx(
        km=layer.kappa_m.unsqueeze(-1),
        c=((1 - layer.kappa_lam) * TANH_GAIN).unsqueeze(-1),
        kr=kappa_r,
        relu=s.activation == "relu",
        in_loop=in_loop,
        mode=plan.mode,
        rec_mask=rec_mask if plan.has_rec else None,
        sparse=plan.sparse,
        tokens=tokens,
    )
    wb = []
    for w, b in zip(ws[1:], bs[1:], strict=True):
        wb += [w, b.unsqueeze(-1)]
    out = _LayerScan.apply(k, P, table, R, ws[0], layer.w_y, layer.b, a0, m0, r0, *wb)
    if in_loop:
        return out
    (m_out,) = out
    o = torch.einsum("nd,tndb->tnb", layer.w_y, m_out)
    pre = o + layer.b.unsqueeze(-1)
    a_out = torch.relu(pre) if s.activation == "relu" else pre
    return a_out, m_out, r0


def fast_run(model: ELMNetwork, x: Tensor, state, masks) -> dict:
    """The forward pass of `ELMNetwork.run` (no trace) through the layer scans."""
    from elm_core.model import ELMState, _to_external, _to_internal

    drop_u0, drop_a0, drop_u1, drop_a1 = masks
    a0, m0, r0, a1, m1, r1 = (_to_internal(t) for t in state.tensors())
    if not x.is_floating_point() and x.dim() == 2 and drop_u0 is None:
        hidden = scan_layer(model.hidden, a0, m0, r0, drop_a0, tokens=x.t().long(), token_scale=model.embed_scale)
    else:
        u = model.embed(x).permute(1, 2, 0)  # (T, I, B)
        if drop_u0 is not None:
            u = u * drop_u0
        hidden = scan_layer(model.hidden, a0, m0, r0, drop_a0, u=u)
    h_a, h_m, h_r = hidden  # (T, N, B), (T, N, d_m, B), (N, B)
    u1 = h_a if drop_u1 is None else h_a * drop_u1
    o_a, o_m, o_r = scan_layer(model.readout, a1, m1, r1, drop_a1, u=u1)
    readout = o_a.permute(2, 0, 1)  # (B, T, n_out)
    return {
        "logits": model.out(readout),
        "hidden": h_a.permute(2, 0, 1),
        "readout": readout,
        "state": ELMState(*(_to_external(t) for t in (h_a[-1], h_m[-1], h_r, o_a[-1], o_m[-1], o_r))),
    }
