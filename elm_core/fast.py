"""The ELM Network's fast path: whole-sequence layer scans with a hand-written backward through time.

Same computation as `ELMLayer.step` (elm_core/reference_data/FORMAT.md, "Exact per-step computation"), reorganised:

1. The synapses and the first MLP layer are linear in z_t = concat(u_t, a_{t-1}), so they fold into
   one matrix F (N d1, I + N) = blockdiag(W_0[:, :, :d_tree]) @ W_syn (W_syn[(i, k), c] = input_scale
   * the sum of w_s over the synapses of branch k of neuron i that read source c), built once per
   forward by one index_add over the synapses, so that its backward is a gather. Its feed-forward columns act
   on the whole sequence at once (one matrix product, or one row gather per step for token input);
   only the recurrent part runs inside the time loop: the dense block M = F[:, I:] ("fused"), or,
   when that block would be large, the recurrent synapses as a sparse CSR matrix W_rec (N d_tree, N)
   (elm_core.sparse) followed by the first layer's branch block ("sparse").
2. `_LayerScan` runs one layer over all T steps without building an autograd graph. Its backward
   walks t = T-1..0 carrying only the state gradients (activity, memory, high-pass). Weight
   gradients are sums over (t, b) of outer products: the per-neuron ones (and a dense M's) accumulate
   in the loop with one batched product per step, the sparse W_rec one is a sampled product
   (torch.sparse.sampled_addmm) over all steps after the loop.
3. Every step's readout o_t = w_y . m_t and activity are computed inside the loop, also for a layer
   without recurrence (the readout layer): one batched product a step costs less than the whole-sequence
   products and their gradients outside it (measured).

Layout inside the scan: the neuron axis first, then the batch, then the features: the memory of
step t is (N, B, d_m), so that the per-neuron MLP is one `bmm` with the neurons as its batch, and
the batch-major drive (B, N d1) of a step is a view of it with contiguous rows. The sequence buffers
come from a pool, and the loops run under a thread cap (elm_core.workspace).
Mixed precision (autocast, `precision: bf16`): the feed-forward product P over the whole sequence runs
under the caller's autocast, in bfloat16 on a GPU; the per-layer set-up and the time loop run with autocast
off in the layer's dtype. The loop writes into float32 buffers through out=, and a bfloat16 state carried
over thousands of steps would lose the slow memories (8 bits of mantissa against kappa_m close to 1).

The nonlinearity runs as tanh(v) = 2 sigmoid(2 v) - 1 (sigmoid is several times faster than tanh on CPU):
the slope 2/3 and the 2 are folded into the last MLP layer, so that u is 4/3 of its output and the memory
update is m_t = km m_{t-1} + 2 c sigmoid(u) - c, with c = (1 - kappa_lam) 1.7159. The scan carries the
shifted decayed memory md_t = km m_{t-1} - c, so that m_t = md_t + 2 c sigmoid(u) is one operation; the
first MLP layer reads md_t, and its bias absorbs the shift (b_0 + W_0,memory c).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from elm_core import native
from elm_core.layer import TANH_GAIN, TANH_SLOPE, ELMLayer
from elm_core.sparse import SparseRec, branch_rows, sparse_structure
from elm_core.workspace import WORKSPACE, scan_threads

SIGMOID_SCALE = 2 * TANH_SLOPE  # tanh(slope v) = 2 sigmoid(2 slope v) - 1

# The recurrent block M of F is kept dense while it has at most this many elements; larger layers
# keep their recurrent synapses sparse. On CUDA it is always dense up to CUDA_FUSED_MAX_ELEMENTS (a
# GiB of float32): one dense product a step is what a GPU runs well, and it keeps the scan off cuSPARSE.
FUSED_MAX_ELEMENTS = 2**16
CUDA_FUSED_MAX_ELEMENTS = 2**28
# The gradient of the sparse W_rec is one sampled product over all steps after the loop while the
# branch gradients of all steps fit in this many elements, else one such product per step.
SAMPLED_MAX_ELEMENTS = 2**25
# Without a backward, the dense input's product P is computed into rows padded to a multiple of this.
PAD_COLUMNS = 16


_MODE_ID = {"none": 0, "fused": 1, "sparse": 2}  # scan.cpp's mode numbers


def _native_ops(k: _ScanCtx, W0: Tensor, n_hidden: int):  # noqa: ANN202 - torch.ops namespace
    """The native loops (elm_core.native) when they are on and fit this scan, else None."""
    if W0.device.type != "cpu" or W0.dtype != torch.float32 or n_hidden > 1:
        return None
    return native.load()


def _memory_scaled(W0: Tensor, km: Tensor, d_tree: int) -> Tensor:
    """W_0 with its memory columns scaled by km: d loss / d m_{t-1} = km (dm_t + g W_0,m) = km dm_t + g W0k_m."""
    return torch.cat((W0[:, :, :d_tree], W0[:, :, d_tree:] * km), 2)


def _external_pre_grad(g_a: Tensor | None, a_out: Tensor, relu: bool) -> tuple[Tensor | None, Tensor]:
    """(relu mask or None, d loss / d pre-activation from outside the layer, in a pooled buffer)."""
    mask = (a_out > 0).to(a_out.dtype) if relu else None
    DPRE = WORKSPACE.empty(a_out.shape, a_out)
    if g_a is None:
        DPRE.zero_()
    elif mask is None:
        DPRE.copy_(g_a)
    else:
        torch.mul(g_a, mask, out=DPRE)
    return mask, DPRE


# --- the scan -------------------------------------------------------------------------------------
@dataclass(eq=False)
class _ScanCtx:
    """What a layer scan needs besides its differentiable inputs."""

    km: Tensor  # (N, 1, d_m) kappa_m
    c: Tensor  # (N, 1, d_m) (1 - kappa_lam) * TANH_GAIN
    kr: float | None  # kappa_r, None = no high-pass
    relu: bool
    mode: str  # "fused" (dense M), "sparse" (CSR W_rec, then W_0's branch block), "none" (no recurrence)
    rec_mask: Tensor | None  # (N_src, B) recurrent dropout mask, or None
    sparse: SparseRec | None = None
    tokens: Tensor | None = None  # (T, B) token input: the drive of step t is table[tokens[t]]
    keep: bool = True  # a backward may follow: keep what it needs

    def __post_init__(self) -> None:
        self.c2, self.neg_c = 2 * self.c, -self.c


class _LayerScan(torch.autograd.Function):
    """One ELM layer over T steps. Inputs (neuron axis first, then batch, then features):

    the feed-forward drive of the first MLP layer, its bias (plus W_0,memory c) included, either
    P (T, B, N d1) (without a backward a view of rows padded to PAD_COLUMNS) or, for token input, a
    table (I, N d1) whose row tokens[t, b] is the drive of sample b at step t;
    R: "fused" M^T (N_src, N d1) | "sparse" the nonzero values of W_rec | "none" None;
    W0 (N, d1, d_tree + d_m), the first MLP layer (in "fused" and "none" mode only its memory block is
    used here, its branch block being folded into the drive and M); w_y (N, d_m); b (N,);
    a0 (N_src, B), m0 (N, B, d_m), r0 (N, B); then W_1, b_1, ..., W_L, b_L (b_j as (N, 1, out)), the
    last layer already scaled by SIGMOID_SCALE.
    Returns a (T, N, B), m (T, N, B, d_m) and r_T (N, B).
    For the backward it keeps, per step, the shifted decayed memory km m_{t-1} - c (in "sparse" mode
    together with the branch inputs W_rec a_{t-1}), relu(z_j) and relu(z_j)^2 of the hidden MLP layers,
    sigmoid(u) and the outputs.
    """

    @staticmethod
    def forward(ctx, k: _ScanCtx, *args):
        with scan_threads(), torch.autocast(k.km.device.type, enabled=False):
            return _LayerScan._forward(ctx, k, *args)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        with scan_threads(), torch.autocast(ctx.k.km.device.type, enabled=False):
            return _LayerScan._backward(ctx, *grads)

    @staticmethod
    def _forward(ctx, k: _ScanCtx, P, table, R, W0, w_y, b, a0, m0, r0, *wb):  # noqa: N803
        steps, batch = (P.shape[0], P.shape[1]) if P is not None else k.tokens.shape
        n, d1, _ = W0.shape
        d_m = m0.shape[2]
        d_tree = W0.shape[2] - d_m
        # (N, in, out) weights, contiguous: bmm runs about twice as fast with them than with transposed views
        W0T = W0.transpose(1, 2).contiguous()
        W0mT = W0T[:, d_tree:]
        WsT, bs = [w.transpose(1, 2).contiguous() for w in wb[0::2]], wb[1::2]
        n_hidden = len(WsT)  # l_mlp
        mode, relu, rec_mask, kr, keep = k.mode, k.relu, k.rec_mask, k.kr, k.keep
        sparse, fused = mode == "sparse", mode == "fused"
        km, c2, neg_c = k.km, k.c2, k.neg_c

        def buf(*shape: int, per_step: bool = True) -> Tensor:
            return WORKSPACE.empty((steps, *shape) if per_step else shape, W0)

        m_out = buf(n, batch, d_m)
        a_out = buf(n, batch)
        # what the backward needs (written through out=, so keeping it costs no extra operation)
        # "sparse": X_t = [W_rec a_{t-1}; (km m_{t-1} - c)^T] per neuron (N (d_tree + d_m), B), the first
        # MLP layer's whole input; other modes: MD_t = km m_{t-1} - c (N, B, d_m)
        dx = d_tree + d_m
        X = buf(n * dx, batch, per_step=keep) if sparse else None
        MD = buf(n, batch, d_m) if keep and not sparse else None
        S = buf(n, batch, d_m) if keep else None  # sigmoid(u)
        Z = [buf(n, batch, w.shape[1]) if keep else None for w in WsT]  # relu(z_j)
        ctx.set_materialize_grads(False)
        ctx.k, ctx.n_hidden = k, n_hidden
        ctx.shapes = (P is not None, table.shape if table is not None else None)
        ops = _native_ops(k, W0, n_hidden)
        if ops is not None:
            r = ops.scan_forward(
                _MODE_ID[mode],
                P,
                table,
                None if k.tokens is None else k.tokens.contiguous(),
                R,
                *(k.sparse.csr64 if sparse else (None, None)),
                W0T,
                WsT[0] if n_hidden else None,
                bs[0].contiguous() if n_hidden else None,
                km.contiguous(),
                k.c.contiguous(),
                w_y.contiguous(),
                b.contiguous(),
                kr,
                relu,
                rec_mask,
                a0.contiguous(),
                m0.contiguous(),
                r0.contiguous(),
                m_out,
                a_out,
                X,
                MD,
                S,
                Z[0] if n_hidden else None,
            )  # the native backward squares Z again instead of keeping relu(z)^2
            ctx.save_for_backward(R, W0, w_y, a0, m0, m_out, a_out, MD, S, X, *Z, *[None] * n_hidden, *wb[0::2])
            return a_out, m_out, r

        H = [buf(n, batch, w.shape[1]) if keep else None for w in WsT]  # relu(z_j)^2

        w_pad = k.sparse.padded(R) if sparse else None
        wy = w_y.unsqueeze(2)  # (N, d_m, 1)
        bcol = b.view(n, 1, 1)

        # per-step views, made once (a view costs about a microsecond; the loop would make thousands)
        def per_step(x: Tensor | None, *shape: int) -> list | tuple:
            return [None] * steps if x is None else x.view(steps, *shape).unbind(0)

        if P is not None:  # the drive of step t: flat (B, N d1) for "fused", else (N, B, d1)
            flat_t = P.unbind(0)
            drive_t = P.view(steps, batch, n, d1).transpose(1, 2).unbind(0)
        else:
            tok_t = k.tokens.unbind(0)
            flat_t = [W0.new_empty(batch, n * d1)] * steps  # index_select writes the rows here
            drive_t = [flat_t[0].view(batch, n, d1).transpose(0, 1)] * steps
        if fused:  # the recurrent part is added into a buffer: the drive of a step is a view of it
            fused_buf = W0.new_empty(batch, n * d1)
            fused_drive = fused_buf.view(batch, n, d1).transpose(0, 1)
        m_t, a_t = m_out.unbind(0), per_step(a_out, n, batch)
        a3_t = per_step(a_out, n, batch, 1)
        S_t = per_step(S, n, batch, d_m)
        MD_t = per_step(MD, n, batch, d_m)
        Z_t = [per_step(z, n, batch, w.shape[1]) for z, w in zip(Z, WsT, strict=True)]
        H_t = [per_step(h, n, batch, w.shape[1]) for h, w in zip(H, WsT, strict=True)]
        if sparse:  # X_t (N dx, B) for the sparse product, its (N, B, dx) view, and the memory part of that
            X4 = X.view(-1, n, dx, batch)  # (T, ...) when kept, else (1, ...): one buffer for every step
            X_t, XT_t = X.view(-1, n * dx, batch).unbind(0), X4.transpose(2, 3).unbind(0)
            XM_t = X4[:, :, d_tree:].transpose(2, 3).unbind(0)
            if not keep:
                X_t, XT_t, XM_t = X_t * steps, XT_t * steps, XM_t * steps

        r, m = r0.unsqueeze(2), m0  # r as (N, B, 1)
        a_in = a0 if rec_mask is None else a0 * rec_mask
        for t in range(steps):
            if P is None:
                torch.index_select(table, 0, tok_t[t], out=flat_t[t])
            drive = drive_t[t]
            if fused:
                torch.addmm(flat_t[t], a_in.t(), R, out=fused_buf)  # + a_{t-1} M^T
                drive = fused_drive
            if sparse:
                torch.addmm(X_t[t], w_pad, a_in, beta=0, out=X_t[t])  # the branch rows; the memory rows get 0
                md = torch.addcmul(neg_c, m, km, out=XM_t[t])
                z = torch.baddbmm(drive, XT_t[t], W0T)
            else:
                md = torch.addcmul(neg_c, m, km, out=MD_t[t])  # (N, B, d_m)
                z = torch.baddbmm(drive, md, W0mT)
            for j in range(n_hidden):
                if keep:
                    h = torch.clamp_min(z, 0, out=Z_t[j][t])
                    hh = torch.mul(h, h, out=H_t[j][t])
                else:
                    hh = z.relu_().square_()
                z = torch.baddbmm(bs[j], hh, WsT[j])
            sg = torch.sigmoid(z, out=S_t[t])
            m = torch.addcmul(md, c2, sg, out=m_t[t])  # (N, B, d_m)
            if kr is not None:  # the high-pass acts on o without the bias: p = o - r_t = kr (o - r_{t-1})
                d = torch.baddbmm(r, m, wy, beta=-1)  # o - r_{t-1}
                r = torch.add(r, d, alpha=1 - kr)
                torch.add(bcol, d, alpha=kr, out=a3_t[t])
            else:
                torch.baddbmm(bcol, m, wy, out=a3_t[t])
            a = a_t[t].clamp_min_(0) if relu else a_t[t]
            a_in = a if rec_mask is None else a * rec_mask
        r = r.view(n, batch)
        ctx.save_for_backward(R, W0, w_y, a0, m0, m_out, a_out, MD, S, X, *Z, *H, *wb[0::2])
        return a_out, m_out, r

    @staticmethod
    def _backward(ctx, *grads):
        k: _ScanCtx = ctx.k
        n_hidden = ctx.n_hidden
        has_P, table_shape = ctx.shapes
        R, W0, w_y, a0, m0, m_out, a_out, MD, S, X, *rest = ctx.saved_tensors
        Z, H, Ws = rest[:n_hidden], rest[n_hidden : 2 * n_hidden], rest[2 * n_hidden :]
        g_a, g_m, g_r = grads
        ops = _native_ops(ctx.k, W0, n_hidden)
        if ops is not None:
            return _LayerScan._backward_native(ops, ctx, *grads)
        # the gradients arrive in the layout of their consumers (often batch-major): read per step, they
        # are better contiguous
        g_a = g_a.contiguous() if g_a is not None else None
        g_m = g_m.contiguous() if g_m is not None else None
        steps, n, batch, d_m = m_out.shape
        d1 = W0.shape[1]
        d_tree = W0.shape[2] - d_m
        W0k = _memory_scaled(W0, k.km, d_tree)
        W0km = W0k[:, :, d_tree:].contiguous()
        Ws2 = [w * 2 for w in Ws]  # the 2 of d relu(z)^2 / dz = 2 relu(z)
        mode, rec_mask, km, kr = k.mode, k.rec_mask, k.km, k.kr
        sparse, fused, rec = mode == "sparse", mode == "fused", mode != "none"
        new, ws = m_out.new_zeros, WORKSPACE.empty

        # what can be computed for all steps at once
        D = torch.addcmul(S, S, S, value=-1, out=ws(S.shape, S)).mul_(k.c2)  # d m_t / d u = 2 c s (1 - s)
        DU = ws(m_out.shape, m_out)  # d loss / d u, kept for the last layer's bias
        # d loss / d z0 of every step, batch-major: the gradient of P, or gathered into the table's after the loop
        G = ws((steps, batch, n * d1), m_out)
        w_rec_t = k.sparse.transposed(R) if sparse else None
        # the branch gradients of all steps, for one sampled product after the loop (or one per step)
        per_step = sparse and n * d_tree * steps * batch > SAMPLED_MAX_ELEMENTS
        dBR = ws((steps, n * d_tree, batch) if not per_step else (1, n * d_tree, batch), m_out) if sparse else None
        # d loss / d pre-activation: the external gradient through the mask now, the recurrent one per step
        mask, DPRE = _external_pre_grad(g_a, a_out, k.relu)
        DO = ws(a_out.shape, a_out) if kr is not None else DPRE  # d loss / d o
        wy3 = w_y.unsqueeze(1)  # (N, 1, d_m)

        # weight gradients accumulate over the steps (per neuron, sums over b of outer products), each in
        # the orientation measured faster: W_0 transposed (N, in, out), h^T @ g; W_1.. as they are, g^T @ h
        g_W0T = new(n, d_tree + d_m, d1)  # the branch rows accumulate here in "sparse" mode only (else via F)
        g_W0mT = g_W0T[:, d_tree:]
        acc_Ws = [new(w.shape) for w in Ws]
        acc_bs = [new(n, batch, w.shape[1]) for w in Ws[:-1]]
        acc_R = new(R.shape) if (fused or per_step) else None
        acc_wy = new(n, 1, d_m)
        dr = None
        if kr is not None:
            dr = g_r.clone() if g_r is not None else new(n, batch)
        da = None
        dm = new(n, batch, d_m)
        # per-step views, made once
        D_t, DU_t, G_t, m_t = D.unbind(0), DU.unbind(0), G.unbind(0), m_out.unbind(0)
        DUT_t = DU.transpose(2, 3).unbind(0)
        out0_t = G.view(steps, batch, n, d1).transpose(1, 2).unbind(0)  # dz0 (N, B, d1), written batch-major
        MD_t = MD.unbind(0) if MD is not None else None
        H_t, Z_t = [x.unbind(0) for x in H], [x.unbind(0) for x in Z]
        g_m_t = g_m.unbind(0) if g_m is not None else None
        dpre_t, do_t = DPRE.unbind(0), DO.unbind(0)
        do_col_t, do_row_t = DO.view(steps, n, batch, 1).unbind(0), DO.view(steps, n, 1, batch).unbind(0)
        mask_t = mask.unbind(0) if mask is not None else None
        a_prev_t = None
        if fused or per_step:
            a_prev_t = [a0, *a_out[:-1].unbind(0)]
        if sparse:
            X_t, dBR_t = X.view(steps, n, d_tree + d_m, batch).unbind(0), dBR.unbind(0)
            dBRv_t = dBR.view(-1, n, d_tree, batch).unbind(0)
            if per_step:
                dBR_t, dBRv_t = dBR_t * steps, dBRv_t * steps
            # d loss / d [branch input; memory] of a step, alternating between two buffers so that dm (a
            # view of one) outlives the next step's product
            dh0_buf = [m_out.new_empty(n, batch, d_tree + d_m) for _ in range(2)]
            dh0_mem = [x[:, :, d_tree:] for x in dh0_buf]
            dh0_brT = [x[:, :, :d_tree].transpose(1, 2) for x in dh0_buf]
        for t in range(steps - 1, -1, -1):
            dpre = dpre_t[t]
            if da is not None:
                dpre.addcmul_(da, mask_t[t]) if mask_t is not None else dpre.add_(da)
            if kr is not None:  # p = o - r_t, r_t = kr r_{t-1} + (1 - kr) o
                do = torch.lerp(dpre, dr, 1 - kr, out=do_t[t])
                dr = dr.sub_(do)
            dm = torch.addcmul(dm, wy3, do_col_t[t])
            acc_wy.baddbmm_(do_row_t[t], m_t[t])
            if g_m_t is not None and (sparse or t == steps - 1):  # else added with the product below
                dm = dm + g_m_t[t]
            out0 = out0_t[t]
            g = torch.mul(D_t[t], dm, out=out0 if n_hidden == 0 else DU_t[t])
            for j in range(n_hidden, 0, -1):
                acc_Ws[j - 1].baddbmm_(DUT_t[t] if j == n_hidden else g.transpose(1, 2), H_t[j - 1][t])
                if j < n_hidden:
                    acc_bs[j - 1].add_(g)
                g = torch.mul(torch.bmm(g, Ws2[j - 1]), Z_t[j - 1][t], out=out0 if j == 1 else None)
            # g: gradient of the first MLP layer's output z0 (N, B, d1), a view of the batch-major buffer
            if sparse:
                g_W0T.baddbmm_(X_t[t], g)
                torch.bmm(g, W0k, out=dh0_buf[t % 2])  # (N, B, d_tree + d_m)
                dm = dh0_mem[t % 2].addcmul_(dm, km)
                dbr = dBR_t[t]
                dBRv_t[t].copy_(dh0_brT[t % 2])  # (N d_tree, B)
                if per_step:
                    a_prev = a_prev_t[t] if rec_mask is None else a_prev_t[t] * rec_mask
                    acc_R.add_(k.sparse.sampled(dbr, a_prev))
                da = torch.mm(w_rec_t, dbr)
            else:
                g_W0mT.baddbmm_(MD_t[t].transpose(1, 2), g)
                g_m_prev = g_m_t[t - 1] if g_m_t is not None and t > 0 else None
                dm_g = torch.bmm(g, W0km) if g_m_prev is None else torch.baddbmm(g_m_prev, g, W0km)
                dm = dm_g.addcmul_(dm, km)
                if fused:
                    a_prev = a_prev_t[t] if rec_mask is None else a_prev_t[t] * rec_mask
                    acc_R.addmm_(a_prev, G_t[t])
                    da = torch.mm(R, G_t[t].t())
            if da is not None and rec_mask is not None:
                da = da.mul_(rec_mask)

        g_W0 = g_W0T.transpose(1, 2).contiguous()
        g_P = G if has_P else None
        g_table = None
        if table_shape is not None:  # the drive of (t, b) was row tokens[t, b] of the table
            g_table = new(table_shape).index_add_(0, k.tokens.reshape(-1), G.view(steps * batch, n * d1))
        g_R = acc_R
        if sparse and not per_step:  # dW_rec[e] = sum over (t, b) of dbr[row e] a_prev[col e]
            a_src = torch.cat((a0.unsqueeze(0), a_out[:-1]))
            if rec_mask is not None:
                a_src = a_src * rec_mask
            a_src = a_src.transpose(0, 1).reshape(a0.shape[0], steps * batch)  # (N_src, T B)
            dbr_all = ws((n * d_tree, steps, batch), m_out).copy_(dBR.transpose(0, 1))  # pooled: no page faults
            g_R = k.sparse.sampled(dbr_all.view(n * d_tree, steps * batch), a_src)
        g_wb = []
        for j in range(n_hidden):
            gw = acc_Ws[j]
            gb = DU.sum((0, 2)) if j == n_hidden - 1 else acc_bs[j].sum(1)
            g_wb += [gw, gb.unsqueeze(1)]
        g_wy, g_b = acc_wy.squeeze(1), DPRE.sum((0, 2))
        g_r0 = dr if kr is not None else g_r  # without a high-pass r passes through unchanged
        g_a0 = da if rec else None
        return (None, g_P, g_table, g_R, g_W0, g_wy, g_b, g_a0, dm, g_r0, *g_wb)

    @staticmethod
    def _backward_native(ops, ctx, g_a: Tensor | None, g_m: Tensor | None, g_r: Tensor | None):  # noqa: ANN205
        """`_backward` through the native loop (elm_core/native/scan.cpp): the state gradients step by step,
        the weight gradients accumulated per neuron inside the loop."""
        k: _ScanCtx = ctx.k
        n_hidden = ctx.n_hidden
        has_P, table_shape = ctx.shapes
        R, W0, w_y, a0, m0, m_out, a_out, MD, S, X, *rest = ctx.saved_tensors
        Z, Ws = rest[:n_hidden], rest[2 * n_hidden :]
        steps, n, batch, d_m = m_out.shape
        d1, dx = W0.shape[1], W0.shape[2]
        d_tree = dx - d_m
        sparse, fused = k.mode == "sparse", k.mode == "fused"
        new = m_out.new_zeros
        W0k = _memory_scaled(W0, k.km, d_tree)
        mask, DPRE = _external_pre_grad(g_a, a_out, k.relu)
        # the drive's gradient: G (T, B, N d1) for a dense input and for a fused M's gradient; for token
        # input the loop adds it straight into the table's gradient
        G = WORKSPACE.empty((steps, batch, n * d1), m_out) if (has_P or fused) else None
        g_table = new(table_shape) if table_shape is not None else None
        dr = g_r.clone() if (g_r is not None and k.kr is not None) else new(n, batch)
        dm = new(n, batch, d_m)
        g_W0T, g_wy = new(n, dx, d1), new(n, d_m)
        g_W1 = new(n, d_m, d1) if n_hidden else None
        g_b1 = new(n, d_m) if n_hidden else None
        g_vals = new(R.shape) if sparse else None
        csr, csr_t = (k.sparse.csr64, k.sparse.csr64_t) if sparse else ((None, None), (None, None))
        da = ops.scan_backward(
            _MODE_ID[k.mode], R if fused else None, *csr, *csr_t, R[k.sparse.perm_t] if sparse else None,
            W0k, Ws[0] * 2 if n_hidden else None, k.km.contiguous(), k.c.contiguous(), w_y.contiguous(), k.kr,
            k.rec_mask, mask, S, Z[0] if n_hidden else None, X, MD, m_out,
            a0.contiguous(), a_out, None if g_m is None else g_m.contiguous(),
            None if g_table is None else k.tokens.contiguous(), DPRE, G, g_table, dr, dm,
            g_W0T, g_W1, g_b1, g_wy, g_vals,
        )  # fmt: skip
        g_R = g_vals
        if fused:  # d M^T = sum over (t, b) of a_{t-1} (masked) times d loss / d z0
            a_src = torch.cat((a0.unsqueeze(0), a_out[:-1]))
            if k.rec_mask is not None:
                a_src = a_src * k.rec_mask
            g_R = torch.mm(a_src.transpose(0, 1).reshape(a0.shape[0], steps * batch), G.view(steps * batch, -1))
        g_wb = [g_W1, g_b1.unsqueeze(1)] if n_hidden else []
        g_r0 = dr if k.kr is not None else g_r
        return (None, G if has_P else None, g_table, g_R, g_W0T.transpose(1, 2).contiguous(), g_wy,
                DPRE.sum((0, 2)), da if k.mode != "none" else None, dm, g_r0, *g_wb)  # fmt: skip


# --- per-layer set-up (autograd ops, once per forward) ---------------------------------------------
def _layer_weights(layer: ELMLayer) -> tuple[list[Tensor], list[Tensor]]:
    """MLP weights and biases with SIGMOID_SCALE folded into the last layer."""
    ws, bs = list(layer.mlp_w), list(layer.mlp_b)
    ws[-1] = ws[-1] * SIGMOID_SCALE
    bs[-1] = bs[-1] * SIGMOID_SCALE
    return ws, bs


@dataclass(eq=False)
class _Synapses:
    """The synapses of a layer that read sources in [lo, hi), as flat indices."""

    lo: int
    hi: int
    syn: Tensor  # into w_s.view(-1)
    branch: Tensor  # neuron i, branch k: i d_tree + k
    row: Tensor  # (source - lo) N + i


def _synapses(layer: ELMLayer, lo: int, hi: int) -> _Synapses:
    s, conn = layer.spec, layer.connectome
    syn = torch.nonzero(((conn >= lo) & (conn < hi)).reshape(-1)).reshape(-1)
    neuron = syn // s.d_s
    branch = branch_rows(s, conn.device).reshape(-1)[syn]
    return _Synapses(lo, hi, syn, branch, (conn.reshape(-1)[syn] - lo) * s.n_neurons + neuron)


def _source_matrix(
    layer: ELMLayer, W0bT: Tensor, sy: _Synapses, base: Tensor | None = None, scale: float = 1.0
) -> Tensor:
    """(hi - lo, N d1): row c - lo is what source c adds to the first MLP layer, F[:, c]^T (times
    `scale`), plus `base` (N d1) in every row when it is given.

    F[(i, a), c] = input_scale * sum over the synapses j of neuron i that read c of W_0[i, a, k(j)] w_s[i, j];
    built by one in-place index_add over the synapses into zeros (or into the rows of `base`), so
    that its backward is a gather of the synapses' rows.
    """
    s = layer.spec
    n_src, d1 = sy.hi - sy.lo, W0bT.shape[1]
    w = (layer.w_s.reshape(-1).index_select(0, sy.syn) * (s.input_scale * scale)).unsqueeze(1)
    vals = W0bT.index_select(0, sy.branch) * w  # (synapses, d1)
    out = vals.new_zeros(n_src, s.n_neurons * d1) if base is None else base.repeat(n_src, 1)
    out.view(n_src * s.n_neurons, d1).index_add_(0, sy.row, vals)
    return out


class _Plan:
    """The recurrent mode and sparse structure of a layer, cached for its connectome."""

    def __init__(self, layer: ELMLayer, key: tuple) -> None:
        s = layer.spec
        self.key = key
        self.has_rec = bool((layer.connectome >= s.n_in).any())
        d1 = layer.mlp_w[0].shape[1]
        cap = FUSED_MAX_ELEMENTS if layer.connectome.device.type == "cpu" else CUDA_FUSED_MAX_ELEMENTS
        if not self.has_rec:
            self.mode = "none"
        elif s.n_neurons * d1 * s.n_neurons <= cap:
            self.mode = "fused"
        else:
            self.mode = "sparse"
        self.sparse = sparse_structure(s, layer.connectome) if self.mode == "sparse" else None
        self.ff = _synapses(layer, 0, s.n_in)
        self.rec = _synapses(layer, s.n_in, s.n_in + s.n_neurons) if self.mode == "fused" else None


def _plan(layer: ELMLayer) -> _Plan:
    conn = layer.connectome
    key = (conn.data_ptr(), conn._version, conn.device, FUSED_MAX_ELEMENTS, CUDA_FUSED_MAX_ELEMENTS)
    plan = layer.__dict__.get("_fast_plan")
    if plan is None or plan.key != key:
        plan = _Plan(layer, key)
        layer.__dict__["_fast_plan"] = plan
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
    """Run `layer` over a sequence fed by a dense input u (T, B, I) or by tokens (T, B), that is by
    the input token_scale * one_hot(tokens). The state: a0 (N, B), m0 (N, B, d_m), r0 (N, B).

    Returns the activity (T, N, B), the memory (T, N, B, d_m) and the final high-pass state (N, B).
    Under autocast only the product P follows it (module docstring, "Mixed precision").
    """
    s = layer.spec
    plan = _plan(layer)
    dtype, device_type = layer.w_y.dtype, layer.w_y.device.type
    no_autocast = torch.autocast(device_type, enabled=False)
    ws, bs = _layer_weights(layer)
    with no_autocast:
        R, c, b0, W0bT = _set_up(layer, plan, ws, bs[0])
        # token input: the drive of a token is a row of b0 + token_scale F_ff^T, built in one pass
        F_ffT = _source_matrix(layer, W0bT, plan.ff, *((b0, token_scale) if tokens is not None else ()))
    P = table = None
    if tokens is not None:
        table = F_ffT  # (I, N d1)
    else:
        steps, batch = u.shape[0], u.shape[1]
        u2 = u.reshape(steps * batch, s.n_in)
        nd1, ld = F_ffT.shape[1], -(-F_ffT.shape[1] // PAD_COLUMNS) * PAD_COLUMNS
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, F_ffT, b0))
        if ld != nd1 and not grad and device_type == "cpu":
            # MKL writes rows of a multiple of 16 floats faster (wide's readout product (3200 x 256) by
            # (256 x 615): 1.4x): pad the columns and hand the scan a view of the first N d1 of each row
            F_pad, b_pad = (torch.nn.functional.pad(t, (0, ld - nd1)) for t in (F_ffT, b0))
            P = torch.addmm(b_pad, u2, F_pad).view(steps, batch, ld).to(dtype)[:, :, :nd1]
        else:
            P = torch.addmm(b0, u2, F_ffT).view(steps, batch, -1).to(dtype)
    k = _ScanCtx(
        km=layer.kappa_m.unsqueeze(1),
        c=c,
        kr=layer.kappa_r_value(),
        relu=s.activation == "relu",
        mode=plan.mode,
        rec_mask=rec_mask if plan.has_rec else None,
        sparse=plan.sparse,
        tokens=tokens,
    )
    wb = []
    for w, b in zip(ws[1:], bs[1:], strict=True):
        wb += [w, b.unsqueeze(1)]
    args = (P, table, R, ws[0], layer.w_y, layer.b, a0, m0, r0, *wb)
    k.keep = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    with no_autocast:
        return _LayerScan.apply(k, *args)


def _set_up(
    layer: ELMLayer, plan: _Plan, ws: list[Tensor], b_0: Tensor
) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """(R for the scan's mode, c (N, 1, d_m), b0 (N d1), W0bT (N d_tree, d1)): what a forward builds
    from the weights besides the feed-forward source matrix."""
    s = layer.spec
    n = s.n_neurons
    d1 = ws[0].shape[1]
    W0bT = ws[0][:, :, : s.d_tree].transpose(1, 2).reshape(n * s.d_tree, d1)  # row (i, k): W_0[i, :, k]
    R = None
    if plan.mode == "fused":
        R = _source_matrix(layer, W0bT, plan.rec)  # M^T (N, N d1)
    elif plan.mode == "sparse":
        sp = plan.sparse
        w_rec = (layer.w_s * s.input_scale).reshape(-1)[sp.syn]
        R = w_rec.new_zeros(sp.nnz).index_add(0, sp.slot, w_rec)
    # the scan feeds the first layer km m - c instead of km m: its bias makes up for it
    c = ((1 - layer.kappa_lam) * TANH_GAIN).unsqueeze(1)  # (N, 1, d_m)
    b0 = torch.baddbmm(b_0.unsqueeze(2), ws[0][:, :, s.d_tree :], c.transpose(1, 2)).reshape(n * d1)
    return R, c, b0, W0bT
