"""The task registry: names, one-line descriptions, what is usable now, and `get_task`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from .base import Task
from .char import ENWIK8_URL, open_enwik8, open_text
from .errors import DataError
from .spikes import SHD_URL, open_shd, shd_paths
from .synthetic import open_synthetic_adding, open_synthetic_digits

DEFAULT_TASK = "text"
TASKS: dict[str, str] = {
    "text": "Shakespeare's plays, bundled (4.8 MB): character language modelling, BPC. The default.",
    "enwik8": "enwik8 (100 MB of Wikipedia XML, your file): character language modelling, BPC.",
    "shd": "Spiking Heidelberg Digits (your files): spoken digit classification, 20 classes, accuracy.",
    "shd-adding": "SHD-Adding (your SHD files): two digits in a row, class = their sum (19), accuracy.",
    "synthetic-adding": "SYNTHETIC stand-in for SHD-Adding: generated spike templates, 19 classes, accuracy.",
    "synthetic-digits": "SYNTHETIC single digits from the same generator: 20 classes, accuracy (a sanity check).",
}
SYNTHETIC = {"synthetic-adding": open_synthetic_adding, "synthetic-digits": open_synthetic_digits}


def _data_dir(data_dir: Path | str | None) -> Path:
    if data_dir is None:
        from elm_core.settings import get_settings

        return get_settings().data_path
    return Path(data_dir).expanduser()


def get_task(name: str, data_dir: Path | str | None = None, **options: Any) -> Task:
    """Open task `name` with its data from data_dir (default: the ELMLAB_DATA_DIR setting).

    options, per task (all optional):
      enwik8:                expected_size=100_000_000 (None accepts any size)
      shd, shd-adding:       bin_ms=2.0, max_time_s=1.0, val_fraction=0.2, val_seed=0, channels=700
      synthetic-adding, synthetic-digits:
                             bin_ms=2.0, max_time_s=1.0, num_train=6400, num_valid=1600, num_test=2000,
                             template_seed=0, channels=700, jitter_ms=20.0, jitter_units=15.0,
                             noise_hz=1000.0, fresh_train=True
    Raises DataError (a ValueError) naming the file and the problem when data is missing or malformed,
    or when the name is unknown.
    """
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    opener = {
        "text": open_text,
        "enwik8": open_enwik8,
        "shd": open_shd,
        "shd-adding": open_shd,
        **SYNTHETIC,
    }[name]
    allowed = [
        p.name for p in inspect.signature(opener).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "adding"
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DataError(
            f"task {name!r} has no option {', '.join(unknown)}; its options: {', '.join(allowed) or 'none'}"
        )
    if name in SYNTHETIC:
        return opener(**options)
    root = _data_dir(data_dir)
    if name in ("shd", "shd-adding"):
        return open_shd(root, adding=name == "shd-adding", **options)
    return opener(root, **options)


def task_availability(data_dir: Path | str | None = None) -> dict[str, str | None]:
    """Per task: None when its files are present (contents are checked by get_task), else why not."""
    root = _data_dir(data_dir)
    out: dict[str, str | None] = {"text": None}
    if (root / "enwik8").is_file() or (root / "enwik8.zip").is_file():
        out["enwik8"] = None
    else:
        out["enwik8"] = f"no enwik8 or enwik8.zip in {root} (get it from {ENWIK8_URL})"
    missing = [p.name for p in shd_paths(root).values() if not (p.is_file() or p.with_name(p.name + ".gz").is_file())]
    why = f"no {' or '.join(missing)} in {root} (get SHD from {SHD_URL})" if missing else None
    out["shd"] = out["shd-adding"] = why
    out.update(dict.fromkeys(SYNTHETIC))
    return {name: out[name] for name in TASKS}


def available_tasks(data_dir: Path | str | None = None) -> list[str]:
    """Names of the tasks whose data files are present now, in TASKS order."""
    return [name for name, why in task_availability(data_dir).items() if why is None]
