"""The store's SQL (DuckDB), built from fixed pieces; every value is a bound `$name` parameter.

Two steps turn the rows of the run files into answers:

1. rec: one row per (run_id, attempt, status). A record present twice (written again after its
   first copy was folded into a compact file, or seen while a compaction is half done) counts
   once: the earliest `updated_at` wins, then the smaller content digest.
2. latest: a run's current record is the greatest by, in order,
       attempt         a re-queued run (attempt + 1) starts a new life;
       phase           queued < running < terminal (done / failed / cancelled), whatever the clocks
                       say, so a late `running` heartbeat never hides a result;
       updated_at      between two terminal records of one attempt, the later one;
       rank            at equal time, done > failed > cancelled;
       digest          a last, arbitrary but fixed, tie-break.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elm_core.records import COLUMNS
from elm_core.store.files import ARROW_TYPES, DEFAULTS, DIGEST, PHASE, RANK, SQL_TYPES


def _case(mapping: dict[str, int]) -> str:
    whens = " ".join(f"WHEN '{status}' THEN {value}" for status, value in mapping.items())
    return f"(CASE status {whens} END)"


PHASE_SQL = _case(PHASE)
RANK_SQL = _case(RANK)
LATEST_ORDER = f"attempt DESC, {PHASE_SQL} DESC, updated_at DESC, {RANK_SQL} DESC, {DIGEST} DESC"
HISTORY_ORDER = f"attempt, {PHASE_SQL}, updated_at, {RANK_SQL}, {DIGEST}"


def columns(with_curve: bool) -> list[str]:
    """The canonical columns a query returns (`curve` is bulky and left out unless asked for)."""
    return [c for c in COLUMNS if with_curve or c != "curve"]


# What deduplication, the latest-record order and `filters` read, whatever columns a query returns.
KEY_COLUMNS = frozenset(
    {"run_id", "attempt", "status", "created_at", "updated_at", "task", "sweep_id", "source", "budget", "params"}
)


class Query:
    """Builds one statement and its parameters over a snapshot of the store: the large files, read
    by DuckDB from disk (`$files`), and the rows of the small files, an Arrow table registered on
    the connection as `small_rows` (elm_core/store/cache.py)."""

    SMALL = "small_rows"

    def __init__(
        self,
        files: list[str],
        present: set[str],
        has_small: bool,
        with_curve: bool,
        run_id: str | None = None,
        only: Sequence[str] | None = None,
    ):
        """`only`: return just these columns (in canonical order), reading only them and KEY_COLUMNS."""
        self.params: dict[str, Any] = {}
        self.columns = columns(with_curve)
        read = self.columns
        if only is not None:
            self.columns = [c for c in self.columns if c in only]
            read = [c for c in columns(with_curve) if c in only or c in KEY_COLUMNS]
        where = ""
        if run_id is not None:  # one run only: filtered before deduplication (same answer, less work)
            self.params["run_id"] = run_id
            where = " WHERE run_id = $run_id"
        parts = []
        if files:
            self.params["files"] = files
            select = ", ".join(self._column(c, c in present) for c in [*read, DIGEST])
            parts.append(f"SELECT {select} FROM read_parquet($files, union_by_name = true){where}")
        if has_small or not files:
            select = ", ".join(self._column(c, True) for c in [*read, DIGEST])
            parts.append(f"SELECT {select} FROM {self.SMALL}{where}")
        self._source = "\n  UNION ALL\n  ".join(parts)

    def _column(self, name: str, present: bool) -> str:
        if name == DIGEST:
            return f"CAST({DIGEST} AS VARCHAR) AS {DIGEST}" if present else f"NULL::VARCHAR AS {DIGEST}"
        typ = SQL_TYPES[ARROW_TYPES[name]]
        col = f'CAST("{name}" AS {typ})'
        if name not in DEFAULTS:
            return f'{col} AS "{name}"'
        self.params[f"d_{name}"] = DEFAULTS[name]
        default = f"CAST($d_{name} AS {typ})"
        return f'COALESCE({col}, {default}) AS "{name}"' if present else f'{default} AS "{name}"'

    def ctes(self) -> str:
        return (
            f"WITH src AS (\n  {self._source}\n),\n"
            "rec AS (SELECT * FROM src QUALIFY row_number() OVER "
            f"(PARTITION BY run_id, attempt, status ORDER BY updated_at, {DIGEST}) = 1),\n"
            f"latest AS (SELECT * FROM rec QUALIFY row_number() OVER "
            f"(PARTITION BY run_id ORDER BY {LATEST_ORDER}) = 1)\n"
        )

    def out(self) -> str:
        return ", ".join(f'"{c}"' for c in self.columns)

    def run(self, body: str) -> tuple[str, dict[str, Any]]:
        return self.ctes() + body, self.params


def filters(
    q: Query,
    *,
    task: str | Sequence[str] | None = None,
    sweep_id: str | Sequence[str] | None = None,
    status: str | Sequence[str] | None = None,
    source: str | Sequence[str] | None = None,
    budget: float | None = None,
    budget_tol: float = 0.05,
) -> str:
    """A WHERE clause (or "") for the given filters; values go into `q.params`."""
    conds = []
    for name, value in (("task", task), ("sweep_id", sweep_id), ("status", status), ("source", source)):
        if value is None:
            continue
        q.params[f"f_{name}"] = [value] if isinstance(value, str) else [str(v) for v in value]
        conds.append(f"list_contains(CAST($f_{name} AS VARCHAR[]), {name})")
    if budget is not None:
        # Iso-budget slice: the run's budget (or, without one, its exact parameter count) lies
        # within budget_tol of the target:  |coalesce(budget, params) - B| <= tol * B.
        q.params["f_budget"] = float(budget)
        q.params["f_tol"] = float(budget_tol)
        conds.append("abs(coalesce(budget, params) - $f_budget) <= $f_tol * $f_budget")
    return f" WHERE {' AND '.join(conds)}" if conds else ""
