"""Every data set behind one interface.

    from elm_core.data import get_task
    task = get_task("text")   # or "enwik8", "shd", "shd-adding", "synthetic-adding", "synthetic-digits"

Tasks (`TASKS` maps each name to a one-line description; `DEFAULT_TASK` = "text"):

    text              Shakespeare's 37 plays, bundled in the package (corpus/SOURCE.md): works out of the box
    enwik8            <data dir>/enwik8 or enwik8.zip: the standard 90M / 5M / 5M byte split
    shd               <data dir>/shd_train.h5 + shd_test.h5 (or .h5.gz): 20 classes, 500 steps
    shd-adding        the same files: two digits in a row, label (a mod 10) + (b mod 10), 19 classes, 1000 steps
    synthetic-adding  generated, SHD-Adding's shapes and label rule; synthetic=True everywhere it appears
    synthetic-digits  the same generator, one digit per sample, 20 classes (a sanity check)

The data dir is the ELMLAB_DATA_DIR setting unless `data_dir` is given. `available_tasks(data_dir)` lists
the tasks whose files are present; `task_availability(data_dir)` says why the others are not.

Every task (`Task`) has: name, kind ('char' | 'spike'), n_in, n_out, metric_name ('bpc' | 'accuracy'),
dataset_hash (sha256 of the files' size + first and last MiB, 16 hex digits; for the synthetic tasks, of
the generator's version and knobs), description, synthetic, files, options, and info() -> dict for records.
Splits are 'train', 'valid', 'test'.

Char tasks (`CharTask`; text, enwik8), metric bits per character:
    split: first 90% of the bytes train, next 5% valid, last 5% test (enwik8: exactly 90M / 5M / 5M)
    vocab: np.ndarray of the byte values present in the file; n_in = n_out = len(vocab)
    stream(split, batch_size, seq_len, *, seed=0, loop=None) -> iterator of (x [B, T] long, y [B, T] long,
        new_stream [B] bool): B parallel streams for truncated BPTT; row b of each batch continues row b
        of the one before (x_{k+1}[b, 0] == y_k[b, -1]); y is x shifted by one character. 'train' loops
        forever; valid / test make one pass that scores every character once (see CharTask.stream).
    tokens(split) -> LongTensor [n]    the whole split (for the final test pass)
    split_len(split) -> int;  decode(ids) -> str
The file is memory-mapped (np.memmap), never read whole into Python objects.

Spike tasks (`SpikeTask`; shd, shd-adding, synthetic-*), metric accuracy, n_in = channels (700 unless
pooled: option `channels`, a divisor of 700, sums adjacent units):
    seq_len: time steps per sample (n_bins, or 2 n_bins for adding); n_out: 20 or 19
    batches(split, batch_size, *, seed=0, epoch=0, num_batches=None) -> iterator of
        (x [B, seq_len, n_in] float spike counts, y [B] long)
    num_samples(split) -> int
SHD: 2 ms bins, cut at 1 s; validation = 20% of shd_train.h5 by a per-sample Bernoulli mask (fixed
seed); test = shd_test.h5. Train order / pairs are drawn from (seed, epoch); valid / test are fixed.
Spikes are kept sparse (one int32 per spike) and binned to dense counts per batch. The synthetic tasks'
knobs and the measured effect of each are in docs/spikes.md.

Errors: `DataError` (a ValueError) for any missing, truncated or malformed file, naming the file, what
was expected and, for a missing one, where it was looked for and where to get it.
"""

from __future__ import annotations

from .base import SPLITS, Task
from .char import CharTask, split_bounds
from .errors import DataError
from .spikes import SpikeTask
from .tasks import DEFAULT_TASK, TASKS, available_tasks, get_task, task_availability

__all__ = [
    "DEFAULT_TASK",
    "SPLITS",
    "TASKS",
    "CharTask",
    "DataError",
    "SpikeTask",
    "Task",
    "available_tasks",
    "get_task",
    "split_bounds",
    "task_availability",
]
