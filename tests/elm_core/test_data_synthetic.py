"""The synthetic spike tasks: shapes, determinism, label rules, pooling, fresh training data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elm_core.data import TASKS, DataError, available_tasks, get_task


def small(name="synthetic-adding", **kw):
    return get_task(name, **{"bin_ms": 20.0, "num_train": 64, "num_valid": 16, "num_test": 16, **kw})


def test_synthetic_adding_has_shd_addings_shapes_and_says_it_is_synthetic(tmp_path):
    task = get_task("synthetic-adding", tmp_path)
    assert (task.n_in, task.n_out, task.seq_len) == (700, 19, 1000)
    assert task.synthetic and "synthetic" in task.name and "SYNTHETIC" in task.description
    assert task.info()["synthetic"] is True and task.files == ()
    assert [task.num_samples(s) for s in ("train", "valid", "test")] == [6400, 1600, 2000]
    x, y = next(task.batches("train", 4))
    assert x.shape == (4, 1000, 700) and x.dtype == torch.float32 and y.shape == (4,)
    assert x.sum() > 0 and x.min() >= 0


def test_synthetic_digits_is_registered_and_labels_each_recording_with_its_class():
    assert "synthetic-digits" in TASKS and "synthetic-digits" in available_tasks()
    task = small("synthetic-digits")
    assert (task.n_in, task.n_out, task.seq_len, task.synthetic) == (700, 20, 50, True)
    assert "SYNTHETIC" in task.description and "20 classes" in task.description
    digits, members = task._splits["valid"]
    x, y = next(task.batches("valid", 16))
    assert torch.equal(x, torch.from_numpy(digits.dense(members))) and y.tolist() == digits.label(members).tolist()
    adding = small()  # the same generator: recording i of a split is the same in both tasks
    assert torch.equal(torch.from_numpy(adding._splits["valid"][0].dense(members)), x)
    seen = {c for _, y in small("synthetic-digits", num_train=400).batches("train", 50) for c in y.tolist()}
    assert seen == set(range(20))


def test_synthetic_adding_is_deterministic_and_fast_at_a_coarse_bin():
    a, b = small(), small()
    assert a.seq_len == 100 and a.dataset_hash == b.dataset_hash
    for (xa, ya), (xb, yb) in zip(
        a.batches("train", 8, seed=3, epoch=1), b.batches("train", 8, seed=3, epoch=1), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x0, _ = next(a.batches("train", 8, seed=3, epoch=2))
    assert not torch.equal(x0, next(b.batches("train", 8, seed=3, epoch=1))[0])
    assert torch.equal(next(a.batches("test", 8, seed=1))[0], next(b.batches("test", 8, seed=2, epoch=5))[0])


@pytest.mark.parametrize(
    "knob",
    [{"template_seed": 1}, {"channels": 70}, {"jitter_ms": 10.0}, {"jitter_units": 5.0}, {"noise_hz": 0.0},
     {"fresh_train": False}],
)
def test_every_knob_is_part_of_the_dataset_hash(knob):
    assert small(**knob).dataset_hash != small().dataset_hash
    assert small(**knob).options.items() >= knob.items()


def test_synthetic_adding_labels_are_the_sum_of_the_two_digit_values():
    task = small()
    digits = task._splits["train"][0]
    for epoch in range(3):
        pairs = task._draws("train", 16, 0, epoch)  # fresh recordings: the draws are recording ids
        _, y = next(task.batches("train", 16, epoch=epoch))
        assert y.tolist() == (digits.label(pairs[:, 0]) % 10 + digits.label(pairs[:, 1]) % 10).tolist()
        x, _ = next(task.batches("train", 16, epoch=epoch))
        assert torch.equal(x[:, :50], torch.from_numpy(digits.dense(pairs[:, 0])))
        assert torch.equal(x[:, 50:], torch.from_numpy(digits.dense(pairs[:, 1])))


def test_pooled_channels_are_sums_of_adjacent_units_of_the_same_recordings():
    full, pooled = small(), small(channels=70)
    assert (pooled.n_in, pooled.seq_len) == (70, 100) and "70 channels" in pooled.description
    for (xf, yf), (xp, yp) in zip(full.batches("train", 4, num_batches=2), pooled.batches("train", 4, num_batches=2),
                                  strict=True):
        assert torch.equal(xp, xf.reshape(4, 100, 70, 10).sum(-1)) and torch.equal(yp, yf)
    assert small(channels=100).n_in == 100
    with pytest.raises(DataError, match="must divide 700"):
        small(channels=64)


def test_fresh_training_pairs_are_new_every_epoch_and_eval_sets_stay_fixed():
    fresh, pool = small(channels=70), small(fresh_train=False, channels=70)
    assert fresh.fresh_train and "fresh recordings" in fresh.description
    assert fresh.num_samples("train") == 64  # samples per epoch

    def train_x(epoch, task=fresh, **kw):
        return torch.cat([x for x, _ in task.batches("train", 16, seed=1, epoch=epoch, **kw)])

    assert torch.equal(train_x(0), train_x(0))  # fresh, but drawn from (seed, epoch): reproducible
    halves = [set(map(bytes, h.numpy())) for e in range(3) for h in train_x(e).split(50, dim=1)]
    assert len(set.union(*halves)) == sum(map(len, halves)) == 3 * 2 * 64  # no recording is served twice
    reused = [set(map(bytes, h.numpy())) for e in range(3) for h in train_x(e, pool).split(50, dim=1)]
    assert len(set.union(*reused)) <= 64  # the fixed pool: 64 recordings serve 384 halves
    assert len(list(fresh.batches("train", 16, num_batches=9))) == 9
    for split in ("valid", "test"):
        a = list(fresh.batches(split, 8, seed=1, epoch=4))
        b = list(pool.batches(split, 8, seed=7, epoch=0))
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    assert len(list(small("synthetic-digits").batches("train", 16, num_batches=10))) == 10  # beyond one pass
    assert len(list(small("synthetic-digits", fresh_train=False).batches("train", 16, num_batches=10))) == 4


def test_less_noise_and_jitter_give_cleaner_recordings():
    clean = small(noise_hz=0.0, jitter_ms=0.0, jitter_units=0.0, channels=70)
    x, _ = next(clean.batches("valid", 16))
    noisy, _ = next(small(channels=70).batches("valid", 16))
    assert x.sum() < noisy.sum() * 0.5  # 1000 spikes/s of background noise dominate a 240-spike digit
    assert (x > 0).float().mean() < (noisy > 0).float().mean()


@pytest.mark.parametrize(
    ("options", "what"),
    [({"noise_hz": -1.0}, "noise_hz must be"), ({"jitter_ms": float("nan")}, "jitter_ms must be"),
     ({"num_valid": 0}, "at least one sample"), ({"channels": 0}, "must divide 700"), ({"bogus": 1}, "no option")],
)
def test_bad_options_get_one_line_errors(options, what):
    with pytest.raises(DataError, match=what) as e:
        get_task("synthetic-digits", **options)
    assert "\n" not in str(e.value)


def test_synthetic_digits_can_be_told_apart_but_not_trivially():
    task = get_task("synthetic-adding", bin_ms=20.0, num_train=300, num_valid=100)
    (train, _), (valid, _) = task._splits["train"], task._splits["valid"]
    ids = np.arange(300)

    def features(d, n):  # 20 ms x 10-channel counts, centred and normalised
        x = d.dense(np.arange(n)).reshape(n, 50, 70, 10).sum(-1).reshape(n, -1)
        x -= x.mean(1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    f = features(train, 300)
    means = np.stack([f[train.label(ids) == c].mean(0) for c in range(20)])
    accuracy = ((features(valid, 100) @ means.T).argmax(1) == valid.label(np.arange(100))).mean()
    assert 0.6 < accuracy < 1.0  # chance is 0.05
