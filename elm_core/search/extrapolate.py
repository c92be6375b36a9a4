"""Learning-curve extrapolation: where a stopped run's metric would have converged.

Model, for a curve (s_i, y_i) of a loss-like metric against steps:

    L(s) = L_inf + A s^-alpha,     A >= 0, alpha in [0.05, 3]

fitted by variable projection: for each alpha on a log grid the model is linear in (L_inf, A) and
solved by least squares; the alpha (80 points, log-spaced) with the least residual sum of squares
wins, refined by a parabola in log alpha through it and its neighbours. Interval: a residual bootstrap (refit on
y*_i = fitted_i + r_j, r resampled with replacement); the (alpha/2, 1 - alpha/2) percentiles of the
replicates' L_inf and of their prediction at the final step. A power law needs some curvature to
tell L_inf from A: with fewer than `MIN_POINTS` points, or points at fewer than 4 distinct steps,
there is no fit ("too few points"). For a maximised metric (accuracy) fit 1 - y, or pass
`maximize=True` and the curve is flipped and flipped back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 6
ALPHAS = np.exp(np.linspace(np.log(0.05), np.log(3.0), 80))


@dataclass(frozen=True)
class CurveFit:
    """ok: a fit was made; note says why not. l_inf / final: the floor and the prediction at
    `final_step`, each with its bootstrap interval."""

    ok: bool
    note: str = ""
    l_inf: float = float("nan")
    l_inf_ci: tuple[float, float] = (float("nan"), float("nan"))
    amplitude: float = float("nan")
    alpha: float = float("nan")
    final_step: int = 0
    final: float = float("nan")
    final_ci: tuple[float, float] = (float("nan"), float("nan"))
    n_points: int = 0
    rmse: float = float("nan")


def _linear(x: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L_inf, A, rss) of y = L_inf + A x with A >= 0, for every pair of rows of x (.., n), ys (.., n)."""
    xm, ym = x.mean(axis=-1, keepdims=True), ys.mean(axis=-1, keepdims=True)
    xc, yc = x - xm, ys - ym
    a = np.maximum(np.sum(xc * yc, axis=-1) / np.sum(xc * xc, axis=-1), 0.0)
    c = ym[..., 0] - a * xm[..., 0]
    rss = np.sum((ys - c[..., None] - a[..., None] * x) ** 2, axis=-1)
    return c, a, rss


def _fit_all(s: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best (L_inf, A, alpha) for every row of ys (k, n): the alpha grid, then a parabola in log alpha
    through the best grid point and its neighbours."""
    x = s[None, :] ** -ALPHAS[:, None]  # (m, n)
    _, _, rss = _linear(x[None, :, :], ys[:, None, :])  # (k, m)
    j = np.clip(np.argmin(rss, axis=1), 1, ALPHAS.size - 2)
    rows = np.arange(ys.shape[0])
    r0, r1, r2 = rss[rows, j - 1], rss[rows, j], rss[rows, j + 1]
    h = np.log(ALPHAS[1] / ALPHAS[0])
    denom = r0 - 2 * r1 + r2
    shift = np.where(denom > 0, 0.5 * (r0 - r2) / np.where(denom > 0, denom, 1.0), 0.0)
    alpha = ALPHAS[j] * np.exp(np.clip(shift, -1.0, 1.0) * h)
    c, a, _ = _linear(s[None, :] ** -alpha[:, None], ys)
    return c, a, alpha


def fit_curve(
    steps: Sequence[float],
    values: Sequence[float],
    final_step: int,
    *,
    maximize: bool = False,
    n_boot: int = 200,
    seed: int = 0,
    ci_level: float = 0.95,
) -> CurveFit:
    """Fit L(s) = L_inf + A s^-alpha to one curve and predict it at `final_step` (module docstring)."""
    s = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = np.isfinite(s) & np.isfinite(y) & (s > 0)
    s, y = s[keep], y[keep]
    if s.size < MIN_POINTS or np.unique(s).size < 4:
        return CurveFit(False, f"too few points ({s.size}) for a power-law fit", final_step=final_step, n_points=s.size)
    sign = -1.0 if maximize else 1.0
    y = sign * y
    c, a, al = (v[0] for v in _fit_all(s, y[None, :]))
    fitted = c + a * s**-al
    resid = y - fitted
    rng = np.random.default_rng(seed)
    boot = fitted[None, :] + rng.choice(resid, size=(n_boot, s.size), replace=True)
    bc, ba, bal = _fit_all(s, boot)
    q = [(1 - ci_level) / 2, 1 - (1 - ci_level) / 2]
    final = c + a * final_step**-al
    bfinal = bc + ba * final_step**-bal
    lo, hi = np.quantile(sign * bc, q)
    flo, fhi = np.quantile(sign * bfinal, q)
    return CurveFit(
        ok=True,
        l_inf=float(sign * c),
        l_inf_ci=(float(min(lo, hi)), float(max(lo, hi))),
        amplitude=float(a),
        alpha=float(al),
        final_step=final_step,
        final=float(sign * final),
        final_ci=(float(min(flo, fhi)), float(max(flo, fhi))),
        n_points=int(s.size),
        rmse=float(np.sqrt(np.mean(resid**2))),
    )
