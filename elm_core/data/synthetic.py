"""synthetic-adding: SHD-Adding's shapes and label rule on generated spike trains, for machines without SHD.

Each of the 20 digit classes has a fixed spatio-temporal template drawn once from `template_seed`:
4 "formant" bands, each a line through (time, channel) space (random start channel, drift, onset and
duration) along which about 120 spike events lie, like the frequency tracks a cochlea model turns a
spoken word into. A recording of class c is its template with every event dropped with probability
0.5, the whole pattern time-warped by U(0.7, 1.3) and shifted by U(-150, 150) ms, each spike jittered
by N(0, 20 ms) in time and N(0, 15) channels, plus 1000 spikes/s of uniform background noise; then it
is binned exactly like SHD. Recording i of a split depends only on (template_seed, split, i), so every
run sees the same data, and pairs are drawn exactly as for SHD-Adding.

The noise level is set so that single digits are not trivial: a nearest-class-mean classifier on
20 ms x 10-channel counts gets about 93% of them right (100% with a tenth of this noise).
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from .errors import DataError
from .spikes import N_DIGITS, N_UNITS, DigitSet, SpikeTask, bin_cells, n_bins_for

GENERATOR = "synthetic-adding/1"  # bump when the generator changes: it is part of the dataset hash
N_BANDS, EVENTS_PER_BAND = 4, 120
DROP, WARP, SHIFT_S, JITTER_S, JITTER_UNITS, NOISE_HZ = 0.5, 0.3, 0.15, 0.02, 15.0, 1000.0


@functools.lru_cache(maxsize=4)
def templates(template_seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per class: (event times in s, event channels as floats)."""
    rng = np.random.default_rng([template_seed, 0])
    out = []
    for _ in range(N_DIGITS):
        times, units = [], []
        for _ in range(N_BANDS):
            u0, drift = rng.uniform(40, N_UNITS - 40), rng.normal(0, 200)  # channels, channels / s
            onset, dur = rng.uniform(0.03, 0.35), rng.uniform(0.15, 0.45)
            t = onset + dur * np.sort(rng.random(rng.poisson(EVENTS_PER_BAND)))
            times.append(t)
            units.append(u0 + drift * (t - onset) + rng.normal(0, 6, len(t)))
        out.append((np.concatenate(times), np.clip(np.concatenate(units), 0, N_UNITS - 1)))
    return tuple(out)


class SyntheticDigits(DigitSet):
    """n generated recordings of one split, made on demand (nothing is stored)."""

    def __init__(
        self, split_code: int, n: int, *, template_seed: int, bin_ms: float, n_bins: int, max_time_s: float
    ) -> None:
        self.key = (template_seed, split_code)
        self.bin_ms, self.n_bins, self.max_time_s = bin_ms, n_bins, max_time_s
        self.templates = templates(template_seed)
        self.labels = np.random.default_rng([template_seed, 1, split_code]).integers(N_DIGITS, size=n)

    def cells(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([*self.key, 2, i])
        t, u = self.templates[self.labels[i]]
        keep = rng.random(len(t)) >= DROP
        t, u = t[keep], u[keep]
        t = t * rng.uniform(1 - WARP, 1 + WARP) + rng.uniform(-SHIFT_S, SHIFT_S) + rng.normal(0, JITTER_S, len(t))
        u = np.clip(np.rint(u + rng.normal(0, JITTER_UNITS, len(u))), 0, N_UNITS - 1)
        k = rng.poisson(NOISE_HZ * self.max_time_s)
        t = np.concatenate([t, rng.uniform(0, self.max_time_s, k)])
        u = np.concatenate([u, rng.integers(N_UNITS, size=k)]).astype(np.int64)
        return bin_cells(t, u, self.bin_ms, self.n_bins)[0]


def open_synthetic_adding(
    *,
    bin_ms: float = 2.0,
    max_time_s: float = 1.0,
    num_train: int = 6400,
    num_valid: int = 1600,
    num_test: int = 2000,
    template_seed: int = 0,
) -> SpikeTask:
    """The synthetic-adding task. A larger bin_ms gives fewer steps (20 ms: 2 x 50) for quick runs."""
    n_bins = n_bins_for(bin_ms, max_time_s)
    sizes = {"train": num_train, "valid": num_valid, "test": num_test}
    if min(sizes.values()) < 1:
        raise DataError(f"synthetic-adding: every split needs at least one sample, got {sizes}")
    splits = {
        split: (
            SyntheticDigits(code, n, template_seed=template_seed, bin_ms=bin_ms, n_bins=n_bins, max_time_s=max_time_s),
            np.arange(n),
        )
        for code, (split, n) in enumerate(sizes.items())
    }
    options = {
        "bin_ms": bin_ms,
        "max_time_s": max_time_s,
        "num_train": num_train,
        "num_valid": num_valid,
        "num_test": num_test,
        "template_seed": template_seed,
    }
    spec = json.dumps({"generator": GENERATOR, **options}, sort_keys=True)
    return SpikeTask(
        "synthetic-adding",
        splits,
        adding=True,
        synthetic=True,
        files=(),
        options=options,
        dataset_hash=hashlib.sha256(spec.encode()).hexdigest()[:16],
        description=f"synthetic-adding (SYNTHETIC, not SHD): generated spike templates per digit with jitter "
        f"and noise, SHD-Adding's label rule (19 classes), {2 * n_bins} steps of {bin_ms:g} ms "
        "x 700 channels",
    )
