"""What every task has in common."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

SPLITS = ("train", "valid", "test")
Split = Literal["train", "valid", "test"]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


class Task:
    """A data set with its split, shapes and metric. Built by `get_task`; see the package docstring."""

    name: str
    kind: Literal["char", "spike"]
    n_in: int
    n_out: int
    metric_name: Literal["bpc", "accuracy"]
    dataset_hash: str
    description: str
    synthetic: bool
    files: tuple[Path, ...]
    options: dict[str, Any]

    def info(self) -> dict[str, Any]:
        """JSON-ready summary for run records and the dashboard."""
        return {
            "name": self.name,
            "kind": self.kind,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "metric": self.metric_name,
            "dataset_hash": self.dataset_hash,
            "synthetic": self.synthetic,
            "description": self.description,
            "files": [str(p) for p in self.files],
            "options": dict(self.options),
            "num_samples": {s: self.num_items(s) for s in SPLITS},  # type: ignore[arg-type]
        }

    def num_items(self, split: Split) -> int:
        """Characters in the split (char tasks) or samples (spike tasks)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} n_in={self.n_in} n_out={self.n_out} {self.dataset_hash}>"
