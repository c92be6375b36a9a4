"""Character tasks: enwik8 and the bundled text corpus, both read as a memory-mapped byte file.

Split (the enwik8 standard, generalised to any length n): train = the first floor(0.90 n) bytes,
valid = the next floor(0.05 n), test = the rest; for the 100,000,000-byte enwik8 that is exactly
90M / 5M / 5M. Vocabulary = the byte values present anywhere in the file, sorted; token id = rank of
the byte in that list (a 256-entry lookup table). Bytes are never copied into Python objects: the
file is an `np.memmap` and each batch is gathered from it with one fancy index.
"""

from __future__ import annotations

import functools
import lzma
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ._files import cache_dir, content_hash, materialise
from .base import Split, Task, check_split
from .errors import DataError

ENWIK8_SIZE = 100_000_000
ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_HEAD = b"<mediawiki"
CORPUS_XZ = Path(__file__).parent / "corpus" / "shakespeare.txt.xz"
MIN_BYTES = 100  # every split needs a few characters
_CHUNK = 16 << 20


def split_bounds(n: int) -> dict[str, tuple[int, int]]:
    """[start, stop) byte offsets of each split of an n-byte file (90 / 5 / 5)."""
    n_train = n * 90 // 100
    n_valid = n * 5 // 100
    return {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, n)}


@functools.lru_cache(maxsize=8)
def _byte_counts(path: str, size: int, mtime_ns: int) -> np.ndarray:
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    counts = np.zeros(256, dtype=np.int64)
    for i in range(0, size, _CHUNK):
        counts += np.bincount(mm[i : i + _CHUNK], minlength=256)
    return counts


class CharTask(Task):
    """Next-character prediction over one byte file; metric BPC (mean cross-entropy in nats / ln 2)."""

    kind = "char"
    metric_name = "bpc"

    def __init__(
        self, name: str, path: Path, *, description: str, shown_as: Path | None = None, options: dict | None = None
    ) -> None:
        shown = shown_as or path
        size = path.stat().st_size
        if size < MIN_BYTES:
            raise DataError(f"{shown}: {size} bytes is too small to split 90/5/5 (need at least {MIN_BYTES})")
        self.name = name
        self.path = path
        self.description = description
        self.synthetic = False
        self.files = (shown,)
        self.options = dict(options or {})
        self.dataset_hash = content_hash([path])
        self._mm = np.memmap(path, dtype=np.uint8, mode="r")
        counts = _byte_counts(str(path), size, path.stat().st_mtime_ns)
        self.vocab: np.ndarray = np.flatnonzero(counts).astype(np.uint8)  # byte value of each token id
        self._lut = np.full(256, -1, dtype=np.int64)
        self._lut[self.vocab] = np.arange(len(self.vocab))
        self.n_in = self.n_out = len(self.vocab)
        self._bounds = split_bounds(size)

    # -- sizes -------------------------------------------------------------------------------------
    def split_len(self, split: Split) -> int:
        check_split(split)
        start, stop = self._bounds[split]
        return stop - start

    num_items = split_len

    # -- data --------------------------------------------------------------------------------------
    def tokens(self, split: Split) -> torch.Tensor:
        """The whole split as token ids, LongTensor [n] (8 bytes a character: meant for valid / test)."""
        check_split(split)
        start, stop = self._bounds[split]
        return torch.from_numpy(self._lut[self._mm[start:stop]])

    def decode(self, ids: torch.Tensor | np.ndarray) -> str:
        """Token ids back to text (UTF-8, undecodable bytes replaced)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return self.vocab[ids].tobytes().decode("utf-8", errors="replace")

    def stream(
        self, split: Split, batch_size: int, seq_len: int, *, seed: int = 0, loop: bool | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """B parallel streams over the split, T characters at a time, for truncated BPTT.

        Yields (x, y, new_stream): x and y LongTensor [B, T] with y[:, t] = the character after x[:, t];
        new_stream BoolTensor [B], True where row b starts a fresh stream (reset its carried state).
        Row b of batch k+1 continues exactly where row b of batch k stopped: x_{k+1}[b, 0] = y_k[b, -1].

        The split's n characters are cut into B contiguous rows of L = (n - 1) // B characters.
        loop (default: True for 'train' only): repeat forever, full [B, T] chunks only; each new pass
        starts every row afresh, and for 'train' rotates the split by an offset drawn from (seed, pass)
        so chunk boundaries differ between passes and seeds. loop=False: one pass, rows from the split
        start, the last chunk may be shorter than T so that every one of the B * L targets is seen
        exactly once (B = 1 covers all n - 1 targets: the final test pass).
        """
        check_split(split)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1 (got {batch_size}, {seq_len})")
        loop = split == "train" if loop is None else loop
        base, stop = self._bounds[split]
        n = stop - base
        row_len = (n - 1) // batch_size
        if row_len < (seq_len if loop else 1):
            raise ValueError(
                f"{self.name} {split} split has {n} characters: too short for {batch_size} streams "
                f"of {seq_len} characters"
            )
        return self._stream(split, batch_size, seq_len, seed, loop, row_len)

    def _stream(
        self, split: Split, batch_size: int, seq_len: int, seed: int, loop: bool, row_len: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        base, stop = self._bounds[split]
        n = stop - base
        rows = np.arange(batch_size, dtype=np.int64)[:, None] * row_len
        ramp = np.arange(seq_len + 1, dtype=np.int64)[None, :]
        n_pass = 0
        while True:
            offset = 0
            if loop and split == "train":
                offset = int(np.random.default_rng([seed, n_pass]).integers(n))
            for k in range(0, row_len, seq_len):
                t = min(seq_len, row_len - k)
                if loop and t < seq_len:
                    break
                idx = base + (offset + rows + k + ramp[:, : t + 1]) % n  # (B, t + 1)
                block = torch.from_numpy(self._lut[self._mm[idx]])
                new = torch.full((batch_size,), k == 0, dtype=torch.bool)
                yield block[:, :-1].contiguous(), block[:, 1:].contiguous(), new
            if not loop:
                return
            n_pass += 1


# -- enwik8 --------------------------------------------------------------------------------------------
def _enwik8_from_zip(zpath: Path, cache: Path) -> Path:
    """Extract the `enwik8` member of enwik8.zip once into the cache; return the extracted file."""
    try:
        with zipfile.ZipFile(zpath) as zf:
            members = [m for m in zf.infolist() if Path(m.filename).name == "enwik8"]
            if not members:
                names = ", ".join(m.filename for m in zf.infolist()[:5]) or "nothing"
                raise DataError(f"{zpath}: the zip holds no member named 'enwik8' (it holds {names})")
            member = members[0]
            dest = cache / f"enwik8-{content_hash([zpath])}"

            def write(f):
                with zf.open(member) as src:  # checks the CRC at the end of the stream
                    shutil.copyfileobj(src, f, _CHUNK)

            try:
                materialise(dest, write)
            except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
                raise DataError(f"{zpath}: truncated or corrupt zip, could not extract 'enwik8' ({e})") from e
            if dest.stat().st_size != member.file_size:
                dest.unlink()
                raise DataError(
                    f"{zpath}: extracted 'enwik8' is {dest.stat().st_size} bytes, the zip says {member.file_size}"
                )
            return dest
    except zipfile.BadZipFile as e:
        raise DataError(
            f"{zpath}: not a readable zip archive ({e}): truncated, or not a zip; expected enwik8.zip from {ENWIK8_URL}"
        ) from e


def open_enwik8(data_dir: Path, *, expected_size: int | None = ENWIK8_SIZE) -> CharTask:
    """enwik8 from `<data_dir>/enwik8`, else `<data_dir>/enwik8.zip` (extracted once into the cache).

    expected_size: the file must have exactly this many bytes (the real enwik8: 100,000,000), which is
    how a truncated download is caught; None accepts any size (small test files).
    """
    raw, zpath = data_dir / "enwik8", data_dir / "enwik8.zip"
    if raw.is_file():
        path, shown = raw, raw
    elif zpath.is_file():
        path, shown = _enwik8_from_zip(zpath, cache_dir(data_dir)), zpath
    else:
        raise DataError(
            f"enwik8 not found: looked for {raw} and {zpath}. Download {ENWIK8_URL} into {data_dir} "
            "(set ELMLAB_DATA_DIR to use another folder)."
        )
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{shown}: the file is empty (expected enwik8, {ENWIK8_SIZE:,} bytes)")
    with open(path, "rb") as f:
        head = f.read(len(ENWIK8_HEAD))
    if head != ENWIK8_HEAD:
        raise DataError(
            f"{shown}: does not look like enwik8 (expected the Wikipedia XML dump starting "
            f"with {ENWIK8_HEAD.decode()!r}, found {head!r})"
        )
    if expected_size is not None and size != expected_size:
        raise DataError(
            f"{shown}: {size:,} bytes, but enwik8 has exactly {expected_size:,}: the file is "
            f"truncated or not enwik8; download it again from {ENWIK8_URL}"
        )
    return CharTask(
        "enwik8",
        path,
        shown_as=shown,
        options={"expected_size": expected_size},
        description="enwik8: first 100M bytes of English Wikipedia XML; next-byte prediction, BPC",
    )


# -- the bundled corpus ----------------------------------------------------------------------------------
def open_text(data_dir: Path) -> CharTask:
    """The bundled Shakespeare corpus (corpus/SOURCE.md), decompressed once into the cache."""
    if not CORPUS_XZ.is_file():
        raise DataError(f"{CORPUS_XZ}: the bundled corpus is missing from the installation")
    dest = cache_dir(data_dir) / f"shakespeare-{content_hash([CORPUS_XZ])}.txt"

    def write(f):
        with lzma.open(CORPUS_XZ) as src:
            shutil.copyfileobj(src, f, _CHUNK)

    try:
        materialise(dest, write)
    except (lzma.LZMAError, EOFError) as e:
        raise DataError(f"{CORPUS_XZ}: the bundled corpus is corrupt ({e})") from e
    return CharTask(
        "text",
        dest,
        shown_as=CORPUS_XZ,
        description="Shakespeare's 37 plays (Project Gutenberg, public domain, bundled); next-character "
        "prediction, BPC",
    )
