"""The one exception the data package raises for anything wrong with a data set or a task name."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing, truncated or in the wrong format, or a task name is unknown.

    The message names the file and says what was expected, so that callers (the CLI, a worker) can
    show it as it is instead of a traceback.
    """
