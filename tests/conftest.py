from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DATA = Path(__file__).resolve().parents[1] / "elm_core" / "reference_data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` skip, saying why, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    why = f"needs a CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda or 'not built'}) sees none"
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture
def reference_data() -> Path:
    return REFERENCE_DATA


@pytest.fixture
def elmlab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated ELMLAB_HOME for the test: its own store, broker files and logs."""
    home = tmp_path / "elmlab-home"
    home.mkdir()
    monkeypatch.setenv("ELMLAB_HOME", str(home))
    for var in ("ELMLAB_STORE_DIR", "ELMLAB_DATA_DIR", "ELMLAB_BROKER_URL", "ELMLAB_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's script runner (AppTest) installs the page script as `__main__` and leaves it there;
    `multiprocessing`'s spawn would then re-run that script in every child. Put the real one back."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
