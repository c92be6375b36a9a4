"""Spike tasks: SHD digit classification, SHD-Adding, and the machinery shared with the synthetic tasks.

A digit recording is kept as its spikes' *cells*, `bin * channels + channel` (int32, one per spike that
falls inside the cut), never as a dense array: dense [n_bins, channels] counts are made per batch with a
single `np.bincount`. For SHD's training file that is 4 bytes a spike in memory instead of the 2.8 GB a
dense uint8 copy of 8,000 x 500 x 700 would take.

Binning: bin = floor(t / bin_ms); spikes at or after the cut (max_time_s, default 1 s) are dropped,
so with 2 ms bins a digit is 500 steps x 700 channels of spike counts.
Pooling: `channels` (a divisor of 700, default 700 = none) sums each run of 700 / channels adjacent
units into one input, channel = unit // (700 / channels). Adjacent SHD units are neighbouring places
on the cochlea model, so pooling keeps the spectro-temporal pattern while the input shrinks (70
channels: a tenth of the synapse choices, and far less to memorise per sample).
Adding: two digits a, b concatenated in time (2 x n_bins steps), label (a mod 10) + (b mod 10), 19
classes; a and b are drawn independently and uniformly from the split.
"""

from __future__ import annotations

import gzip
import math
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ._files import cache_dir, content_hash, materialise
from .base import Split, Task, check_split
from .errors import DataError

N_UNITS = 700
N_DIGITS = 20  # SHD: 0-9 English, 10-19 German
N_SUMS = 19  # (a mod 10) + (b mod 10) in 0..18
SHD_URL = "https://zenkelab.org/datasets/"
EVAL_PAIR_SEED = 20_250_000  # valid / test pairs: one fixed set shared by every run
FRESH_IDS = 2**62  # fresh training recordings: ids drawn from this many (two draws coincide ~never)
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_READ_CHUNK = 1024  # samples read from the h5 file at a time


def n_bins_for(bin_ms: float, max_time_s: float) -> int:
    for name, v in (("bin_ms", bin_ms), ("max_time_s", max_time_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name}={v!r} must be a finite number > 0")
    n = max_time_s * 1000.0 / bin_ms
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"max_time_s={max_time_s} must be a positive whole number of bin_ms={bin_ms} bins")
    return round(n)


def check_channels(channels: int) -> int:
    """The pooling width 700 // channels; a clear error unless channels is a divisor of 700."""
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1 or N_UNITS % channels:
        divisors = ", ".join(str(d) for d in range(1, N_UNITS + 1) if N_UNITS % d == 0 and d >= 10)
        raise DataError(f"channels={channels!r} must divide {N_UNITS} (e.g. {divisors})")
    return N_UNITS // channels


def bin_cells(
    times_s: np.ndarray, units: np.ndarray, bin_ms: float, n_bins: int, channels: int = N_UNITS
) -> tuple[np.ndarray, np.ndarray]:
    """Cells (bin * channels + unit // pool, int32) of the spikes inside the cut, and the mask of those kept."""
    pool = check_channels(channels)
    bins = np.floor(np.asarray(times_s, dtype=np.float64) * (1000.0 / bin_ms))
    keep = (bins >= 0) & (bins < n_bins)
    pooled = np.asarray(units, dtype=np.int64)[keep] // pool
    return (bins[keep].astype(np.int64) * channels + pooled).astype(np.int32), keep


class DigitSet:
    """Labelled digit recordings as spike cells; subclasses provide `label(idx)` and `cells(i)`."""

    n_bins: int
    channels: int = N_UNITS

    def label(self, idx: np.ndarray) -> np.ndarray:
        """Digit classes (int64, 0..19) of recordings idx."""
        raise NotImplementedError

    def cells(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def dense(self, idx: np.ndarray) -> np.ndarray:
        """Spike counts of recordings idx: float32 [len(idx), n_bins, channels]."""
        stride = self.n_bins * self.channels
        parts = [self.cells(int(i)).astype(np.int64) + j * stride for j, i in enumerate(idx)]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        counts = np.bincount(flat, minlength=len(idx) * stride)
        return counts.astype(np.float32).reshape(len(idx), self.n_bins, self.channels)


class ShdFile(DigitSet):
    """One SHD h5 file (spikes/times in s, spikes/units 0..699, labels 0..19), checked on opening.

    The spikes are read (in chunks of samples) and binned on first use, then kept as cells.
    """

    def __init__(
        self, path: Path, *, bin_ms: float, n_bins: int, channels: int = N_UNITS, shown_as: Path | None = None
    ) -> None:
        self.path, self.shown = path, shown_as or path
        self.bin_ms, self.n_bins, self.channels = bin_ms, n_bins, channels
        self._cells: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        if path.stat().st_size == 0:
            raise DataError(f"{self.shown}: the file is empty (expected an SHD HDF5 file)")
        try:
            with h5py.File(path, "r") as f:
                for key in ("spikes/times", "spikes/units", "labels"):
                    if key not in f or not isinstance(f[key], h5py.Dataset):
                        raise DataError(
                            f"{self.shown}: no dataset {key!r}; expected the SHD layout "
                            "(spikes/times, spikes/units, labels)"
                        )
                for key, kind in (("spikes/times", "fiu"), ("spikes/units", "iu")):
                    base = h5py.check_vlen_dtype(f[key].dtype)
                    if base is None or base.kind not in kind:
                        raise DataError(
                            f"{self.shown}: {key!r} has dtype {f[key].dtype}; expected "
                            "variable-length arrays of " + ("times" if "f" in kind else "unit ids")
                        )
                lens = {key: f[key].shape[0] for key in ("spikes/times", "spikes/units", "labels")}
                if len(set(lens.values())) != 1:
                    raise DataError(f"{self.shown}: datasets disagree on the number of samples: {lens}")
                labels = f["labels"][:]
        except DataError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise DataError(
                f"{self.shown}: not a readable HDF5 file in the SHD layout (truncated or corrupt?): {e}"
            ) from e
        if labels.dtype.kind not in "iu":
            raise DataError(f"{self.shown}: 'labels' has dtype {labels.dtype}; expected integers 0..19")
        if len(labels) == 0:
            raise DataError(f"{self.shown}: holds no samples")
        if labels.min() < 0 or labels.max() >= N_DIGITS:
            raise DataError(f"{self.shown}: labels must be 0..{N_DIGITS - 1}; found {labels.min()}..{labels.max()}")
        self.labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, idx: np.ndarray) -> np.ndarray:
        return self.labels[idx]

    def _load(self) -> None:
        n = len(self.labels)
        parts, counts = [], np.zeros(n, dtype=np.int64)
        try:
            with h5py.File(self.path, "r") as f:
                times_ds, units_ds = f["spikes/times"], f["spikes/units"]
                for i0 in range(0, n, _READ_CHUNK):
                    i1 = min(n, i0 + _READ_CHUNK)
                    times, units = times_ds[i0:i1], units_ds[i0:i1]
                    lt = np.fromiter(map(len, times), dtype=np.int64, count=i1 - i0)
                    lu = np.fromiter(map(len, units), dtype=np.int64, count=i1 - i0)
                    if (lt != lu).any():
                        i = i0 + int(np.flatnonzero(lt != lu)[0])
                        raise DataError(
                            f"{self.shown}: sample {i} has {lt[i - i0]} spike times but {lu[i - i0]} unit ids"
                        )
                    t = np.concatenate(list(times)).astype(np.float64) if lt.sum() else np.zeros(0)
                    u = np.concatenate(list(units)).astype(np.int64) if lt.sum() else np.zeros(0, np.int64)
                    if len(u) and (u.min() < 0 or u.max() >= N_UNITS):
                        raise DataError(
                            f"{self.shown}: unit ids must be 0..{N_UNITS - 1}; "
                            f"found {u.min()}..{u.max()} in samples {i0}..{i1 - 1}"
                        )
                    if len(t) and not (np.isfinite(t).all() and t.min() >= 0):
                        raise DataError(
                            f"{self.shown}: spike times must be finite and >= 0 seconds (samples {i0}..{i1 - 1})"
                        )
                    cells, keep = bin_cells(t, u, self.bin_ms, self.n_bins, self.channels)
                    sample = np.repeat(np.arange(i1 - i0), lt)[keep]
                    counts[i0:i1] = np.bincount(sample, minlength=i1 - i0)
                    parts.append(cells)
        except DataError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise DataError(f"{self.shown}: could not read the spikes (truncated or corrupt?): {e}") from e
        self._cells = np.concatenate(parts)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def cells(self, i: int) -> np.ndarray:
        if self._cells is None:
            self._load()
        assert self._cells is not None and self._offsets is not None
        return self._cells[self._offsets[i] : self._offsets[i + 1]]


class SpikeTask(Task):
    """Classification of binned spike trains; metric accuracy (loss on the last step's output).

    `adding=False`: one digit per sample, 20 classes. `adding=True`: two digits per sample, 19 classes.
    `fresh_train=True` (generated recordings only): every training sample is a recording never served
    before, id drawn from (seed, epoch) out of FRESH_IDS, so nothing can be memorised; the train split's
    size is then only the number of samples in an epoch.
    """

    kind = "spike"
    metric_name = "accuracy"

    def __init__(
        self,
        name: str,
        splits: dict[str, tuple[DigitSet, np.ndarray]],
        *,
        adding: bool,
        description: str,
        dataset_hash: str,
        synthetic: bool,
        files: tuple[Path, ...],
        options: dict[str, Any],
        fresh_train: bool = False,
    ) -> None:
        self.name, self.description, self.dataset_hash = name, description, dataset_hash
        self.synthetic, self.files, self.options = synthetic, files, dict(options)
        self.adding, self.fresh_train = adding, fresh_train
        self._splits = splits
        first = next(iter(splits.values()))[0]
        n_bins, self.n_in = first.n_bins, first.channels
        self.n_out = N_SUMS if adding else N_DIGITS
        self.seq_len = 2 * n_bins if adding else n_bins  # time steps per sample

    def num_samples(self, split: Split) -> int:
        """Recordings in the split (adding: the number of pairs in one epoch / the fixed eval set)."""
        check_split(split)
        return len(self._splits[split][1])

    num_items = num_samples

    def _draws(self, split: Split, n: int, seed: int, epoch: int) -> np.ndarray:
        """Indices into the split: [n] (plain) or [n, 2] (adding) in the order they are served.

        Fresh training draws are recording ids themselves, not indices into the split's members.
        """
        size = len(self._splits[split][1])
        if split == "train":
            rng = np.random.default_rng([seed, epoch])
            if self.fresh_train:
                return rng.integers(FRESH_IDS, size=(n, 2) if self.adding else n, dtype=np.int64)
            return rng.integers(size, size=(n, 2)) if self.adding else rng.permutation(size)[:n]
        if self.adding:
            return np.random.default_rng([EVAL_PAIR_SEED, _SPLIT_CODE[split]]).integers(size, size=(n, 2))
        return np.arange(n)

    def batches(
        self, split: Split, batch_size: int, *, seed: int = 0, epoch: int = 0, num_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (x FloatTensor [B, seq_len, n_in] spike counts, y LongTensor [B]).

        train: order (plain) or pairs (adding) drawn from (seed, epoch); full batches only; by default
        num_samples // B batches (adding or fresh: any num_batches, drawn with replacement; otherwise
        plain makes at most one pass). valid / test: a fixed order (plain: file order; adding: one fixed
        set of pairs shared by every run, whatever seed and epoch), the last batch may be short.
        """
        check_split(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        digits, members = self._splits[split]
        size = len(members)
        if split == "train":
            n_batches = size // batch_size if num_batches is None else num_batches
            if not (self.adding or self.fresh_train):
                n_batches = min(n_batches, size // batch_size)
            n = n_batches * batch_size
        else:
            n = size if num_batches is None else min(size, num_batches * batch_size)
        draws = self._draws(split, n, seed, epoch)
        for k in range(0, n, batch_size):
            pick = draws[k : k + batch_size]
            if not (split == "train" and self.fresh_train):
                pick = members[pick]
            if self.adding:
                a, b = pick[:, 0], pick[:, 1]
                x = np.concatenate([digits.dense(a), digits.dense(b)], axis=1)  # (B, 2 n_bins, n_in)
                y = digits.label(a) % 10 + digits.label(b) % 10
            else:
                x, y = digits.dense(pick), digits.label(pick)  # (B, n_bins, n_in)
            yield torch.from_numpy(x), torch.from_numpy(y)


# -- SHD files -------------------------------------------------------------------------------------------
def shd_paths(data_dir: Path) -> dict[str, Path]:
    return {"train": data_dir / "shd_train.h5", "test": data_dir / "shd_test.h5"}


def _locate(path: Path) -> tuple[Path, Path]:
    """(file to read, file to name in messages): `x.h5`, else `x.h5.gz` decompressed once into the cache."""
    if path.is_file():
        return path, path
    gz = path.with_name(path.name + ".gz")
    if not gz.is_file():
        raise DataError(
            f"SHD file not found: looked for {path} and {gz}. Download shd_train.h5.gz and shd_test.h5.gz "
            f"from {SHD_URL} into {path.parent} (set ELMLAB_DATA_DIR to use another folder)."
        )
    dest = cache_dir(path.parent) / f"{path.stem}-{content_hash([gz])}.h5"

    def write(f):
        with gzip.open(gz) as src:
            shutil.copyfileobj(src, f, 16 << 20)

    try:
        materialise(dest, write)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{gz}: truncated or not gzip, could not decompress it ({e})") from e
    return dest, gz


def open_shd(
    data_dir: Path,
    *,
    adding: bool,
    bin_ms: float = 2.0,
    max_time_s: float = 1.0,
    val_fraction: float = 0.2,
    val_seed: int = 0,
    channels: int = N_UNITS,
) -> SpikeTask:
    """SHD (adding=False) or SHD-Adding (adding=True) from shd_train.h5 / shd_test.h5 in data_dir.

    valid = a per-sample Bernoulli(val_fraction) mask over the training file drawn from val_seed;
    train = the rest; test = shd_test.h5 (speakers not in the training file). channels < 700 pools
    adjacent units (see the module docstring).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_bins = n_bins_for(bin_ms, max_time_s)
    check_channels(channels)
    (train_path, train_shown), (test_path, test_shown) = (_locate(p) for p in shd_paths(data_dir).values())
    train_file = ShdFile(train_path, bin_ms=bin_ms, n_bins=n_bins, channels=channels, shown_as=train_shown)
    test_file = ShdFile(test_path, bin_ms=bin_ms, n_bins=n_bins, channels=channels, shown_as=test_shown)
    is_valid = np.random.default_rng(val_seed).random(len(train_file)) < val_fraction
    splits = {
        "train": (train_file, np.flatnonzero(~is_valid)),
        "valid": (train_file, np.flatnonzero(is_valid)),
        "test": (test_file, np.arange(len(test_file))),
    }
    options = {
        "bin_ms": bin_ms,
        "max_time_s": max_time_s,
        "val_fraction": val_fraction,
        "val_seed": val_seed,
        "channels": channels,
    }
    steps = f"{2 * n_bins if adding else n_bins} steps of {bin_ms:g} ms x {channels} channels"
    description = (
        f"SHD-Adding: two spoken digits in a row, class = the sum of their values 0-9 (19 classes), {steps}"
        if adding
        else f"SHD: spoken digit classification, 20 classes, {steps}"
    )
    return SpikeTask(
        "shd-adding" if adding else "shd",
        splits,
        adding=adding,
        description=description,
        dataset_hash=content_hash([train_path, test_path]),
        synthetic=False,
        files=(train_shown, test_shown),
        options=options,
    )
