"""Spike tasks: SHD and SHD-Adding from tiny h5 files in the real layout (synthetic tasks: test_data_synthetic)."""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from elm_core.data import DataError, get_task

N_TRAIN = 200


def write_shd(path: Path, spikes: list[tuple[list[float], list[int]]], labels: list[int]) -> None:
    """An h5 file laid out like shd_train.h5: ragged spikes/times (s) and spikes/units, labels, extra/."""
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(spikes),), dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (len(spikes),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(spikes):
            times[i] = np.asarray(t, dtype=np.float16)
            units[i] = np.asarray(u, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        f.create_dataset("extra/speaker", data=np.zeros(len(spikes), dtype=np.uint16))


# Test file: sample 0 pins the binning (2 ms bins, cut at 1 s); the others mark their id on unit i.
TEST_SPIKES = [
    ([0.001, 0.0013, 0.003, 0.999, 1.0, 1.3, 0.5011], [3, 3, 0, 699, 5, 5, 42]),
    ([0.001], [1]),
    ([0.001], [2]),
    ([], []),
    ([0.001, 0.011], [4, 4]),
]
TEST_LABELS = [7, 12, 3, 19, 0]


@pytest.fixture
def shd_dir(tmp_path: Path) -> Path:
    # training sample i: one spike on unit i at 1 ms (so a batch shows which samples it holds) and one
    # on unit 600 + its label at 21 ms; label i % 20
    write_shd(
        tmp_path / "shd_train.h5",
        [([0.001, 0.021], [i, 600 + i % 20]) for i in range(N_TRAIN)],
        [i % 20 for i in range(N_TRAIN)],
    )
    write_shd(tmp_path / "shd_test.h5", TEST_SPIKES, TEST_LABELS)
    return tmp_path


def ids_in(x: torch.Tensor, step: int = 0) -> list[int]:
    """The training-sample ids marked at a time step of a batch x [B, T, 700]."""
    return x[:, step, :N_TRAIN].argmax(1).tolist()


def test_binning_counts_spikes_per_2ms_bin_and_cuts_at_1s(shd_dir):
    task = get_task("shd", shd_dir)
    assert (task.n_in, task.n_out, task.seq_len, task.metric_name) == (700, 20, 500, "accuracy")
    x, y = next(task.batches("test", 5))
    assert x.shape == (5, 500, 700) and x.dtype == torch.float32 and y.tolist() == TEST_LABELS
    expected = np.zeros((500, 700), dtype=np.float32)
    expected[0, 3] = 2  # 1.0 ms and 1.3 ms share the first bin
    expected[1, 0] = 1
    expected[499, 699] = 1  # the last bin before the cut
    expected[250, 42] = 1
    assert np.array_equal(x[0].numpy(), expected)  # the spikes at 1.0 s and 1.3 s are cut
    assert x[3].sum() == 0 and x[4, 0, 4] == 1 and x[4, 5, 4] == 1


def test_bin_width_and_cut_are_options(shd_dir):
    task = get_task("shd", shd_dir, bin_ms=10.0, max_time_s=0.5)
    x, _ = next(task.batches("test", 5))
    assert x.shape == (5, 50, 700)
    assert x[0, 0, 3] == 2 and x[0, 0, 0] == 1 and x[0].sum() == 3  # 0.5011 s and later are cut
    assert x[4, 1, 4] == 1
    with pytest.raises(ValueError, match="whole number"):
        get_task("shd", shd_dir, bin_ms=3.0)


def test_channels_pool_adjacent_units_by_summing_them(shd_dir):
    full = next(get_task("shd", shd_dir, bin_ms=20).batches("test", 5))[0]
    task = get_task("shd-adding", shd_dir, bin_ms=20, channels=70)
    assert (task.n_in, task.seq_len) == (70, 100) and "70 channels" in task.description
    pooled = next(get_task("shd", shd_dir, bin_ms=20, channels=70).batches("test", 5))[0]
    assert pooled.shape == (5, 50, 70) and torch.equal(pooled, full.reshape(5, 50, 70, 10).sum(-1))
    assert pooled[0, 0, 0] == 3 and pooled[0, 49, 69] == 1  # units 0 and 3 share channel 0; 699 is in 69
    x, _ = next(task.batches("train", 4))
    assert x.shape == (4, 100, 70)
    with pytest.raises(DataError, match="must divide 700"):
        get_task("shd", shd_dir, channels=64)


def test_validation_is_a_fixed_fifth_of_the_training_file(shd_dir):
    a, b = get_task("shd", shd_dir, bin_ms=20), get_task("shd", shd_dir, bin_ms=20)
    n_val = a.num_samples("valid")
    assert a.num_samples("train") + n_val == N_TRAIN and 20 <= n_val <= 60
    assert a.num_samples("test") == len(TEST_LABELS)
    val = [i for x, _ in a.batches("valid", 16) for i in ids_in(x)]
    assert val == [i for x, _ in b.batches("valid", 16) for i in ids_in(x)] == sorted(val)
    assert len(val) == n_val
    train = {i for x, _ in a.batches("train", 1) for i in ids_in(x)}
    assert train.isdisjoint(val) and len(train | set(val)) == N_TRAIN
    other = get_task("shd", shd_dir, bin_ms=20, val_seed=1)
    assert [i for x, _ in other.batches("valid", 16) for i in ids_in(x)] != val


def test_train_order_depends_on_seed_and_epoch_only(shd_dir):
    task = get_task("shd", shd_dir, bin_ms=20)

    def order(**kw):
        return [i for x, _ in task.batches("train", 8, **kw) for i in ids_in(x)]

    assert order(seed=0, epoch=0) == order(seed=0, epoch=0)
    assert order(seed=0, epoch=1) != order(seed=0, epoch=0) != order(seed=1, epoch=0)
    assert sorted(order(seed=3, epoch=2))[:3] != order(seed=3, epoch=2)[:3]
    n_train = task.num_samples("train")
    assert len(order()) == n_train // 8 * 8  # full batches only
    assert len(list(task.batches("train", 8, num_batches=2))) == 2
    sizes = [len(y) for _, y in task.batches("test", 2)]
    assert sizes == [2, 2, 1]  # evaluation keeps the short last batch


def test_labels_follow_the_samples(shd_dir):
    task = get_task("shd", shd_dir, bin_ms=20)
    for x, y in task.batches("train", 16, seed=4):
        assert y.tolist() == [i % 20 for i in ids_in(x)]
        assert y.tolist() == (x[:, 1, 600:620].argmax(1)).tolist()


def test_adding_concatenates_two_digits_and_sums_their_values(shd_dir):
    task = get_task("shd-adding", shd_dir, bin_ms=20)
    assert (task.n_out, task.seq_len, task.synthetic) == (19, 100, False)
    seen = set()
    for x, y in task.batches("train", 8, seed=2, num_batches=30):
        assert x.shape == (8, 100, 700) and y.dtype == torch.int64
        a, b = ids_in(x, 0), ids_in(x, 50)  # the second digit starts at step n_bins
        assert y.tolist() == [(i % 20) % 10 + (j % 20) % 10 for i, j in zip(a, b, strict=True)]
        assert x[:, 1, 600:620].argmax(1).tolist() == [i % 20 for i in a]  # 21 ms: the second 20 ms bin
        assert x[:, 51, 600:620].argmax(1).tolist() == [j % 20 for j in b]
        seen.update(y.tolist())
    assert seen <= set(range(19)) and len(seen) > 12


def test_adding_pairs_are_drawn_from_seed_and_epoch_and_eval_pairs_are_fixed(shd_dir):
    task = get_task("shd-adding", shd_dir, bin_ms=20)

    def pairs(split, **kw):
        return [(ids_in(x, 0), ids_in(x, 50)) for x, _ in task.batches(split, 8, **kw)]

    assert pairs("train", seed=1, epoch=3) == pairs("train", seed=1, epoch=3)
    assert pairs("train", seed=1, epoch=4) != pairs("train", seed=1, epoch=3)
    assert pairs("valid", seed=1, epoch=3) == pairs("valid", seed=9, epoch=0)
    assert sum(len(y) for _, y in task.batches("valid", 8)) == task.num_samples("valid")
    assert len(list(task.batches("train", 8, num_batches=50))) == 50  # pairs are drawn with replacement


def test_gzipped_shd_files_are_decompressed_once(shd_dir, tmp_path):
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for name in ("shd_train.h5", "shd_test.h5"):
        (gz_dir / f"{name}.gz").write_bytes(gzip.compress((shd_dir / name).read_bytes()))
    plain, zipped = get_task("shd", shd_dir, bin_ms=20), get_task("shd", gz_dir, bin_ms=20)
    assert zipped.dataset_hash == plain.dataset_hash and zipped.files[0] == gz_dir / "shd_train.h5.gz"
    assert torch.equal(next(zipped.batches("test", 5))[0], next(plain.batches("test", 5))[0])
    assert len(list((gz_dir / ".cache").glob("*.h5"))) == 2


# -- errors ---------------------------------------------------------------------------------------------
def test_missing_shd_says_where_it_looked_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        get_task("shd-adding", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "shd_train.h5") in msg and "zenkelab.org" in msg


@pytest.mark.parametrize(
    ("breakage", "what"),
    [
        ("empty", "empty"),
        ("garbage", "not a readable HDF5"),
        ("truncated", "not a readable HDF5"),
        ("no labels", "no dataset 'labels'"),
        ("dense times", "variable-length"),
        ("label 20", "labels must be 0..19"),
        ("count mismatch", "disagree"),
    ],
)
def test_broken_shd_files_name_the_file_and_the_problem(shd_dir, breakage, what):
    path = shd_dir / "shd_test.h5"
    if breakage == "empty":
        path.write_bytes(b"")
    elif breakage == "garbage":
        path.write_bytes(b"not hdf5 at all\n" * 100)
    elif breakage == "truncated":
        path.write_bytes(path.read_bytes()[:1500])
    elif breakage == "dense times":
        with h5py.File(path, "w") as f:
            f["spikes/times"] = np.zeros((5, 3), np.float32)
            f["spikes/units"] = np.zeros((5, 3), np.uint16)
            f["labels"] = np.zeros(5, np.uint16)
    else:
        with h5py.File(path, "a") as f:
            if breakage == "no labels":
                del f["labels"]
            elif breakage == "label 20":
                f["labels"][0] = 20
            else:
                del f["labels"]
                f["labels"] = np.zeros(4, np.uint16)
    with pytest.raises(DataError, match=what) as e:
        get_task("shd", shd_dir)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    ("spikes", "what"),
    [([([0.001], [700])], "unit ids must be 0..699"), ([([-0.5], [1])], "finite and >= 0")],
)
def test_bad_spikes_are_reported_when_read(shd_dir, spikes, what):
    write_shd(shd_dir / "shd_test.h5", spikes, [0])
    task = get_task("shd", shd_dir)
    with pytest.raises(DataError, match=what) as e:
        next(task.batches("test", 1))
    assert str(shd_dir / "shd_test.h5") in str(e.value)


def test_truncated_gzip_names_the_file(shd_dir, tmp_path):
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    (gz_dir / "shd_train.h5").write_bytes((shd_dir / "shd_train.h5").read_bytes())
    blob = gzip.compress((shd_dir / "shd_test.h5").read_bytes())
    (gz_dir / "shd_test.h5.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or not gzip") as e:
        get_task("shd", gz_dir)
    assert str(gz_dir / "shd_test.h5.gz") in str(e.value)
    assert not list((gz_dir / ".cache").glob("*"))
