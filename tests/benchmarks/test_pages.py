"""The page benchmark's command line (`python -m benchmarks.pages`); the browser run itself is exercised
by tests/e2e/test_speed.py."""

from __future__ import annotations

import pytest

from benchmarks import pages


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--repeats", "0"], ["--store", "huge"], ["--queued", "-1"]])
def test_module_refuses_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        pages.main(argv)
    assert exit_.value.code == 2 and argv[0] in capsys.readouterr().err


def test_a_server_that_does_not_start_is_a_clear_error(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(pages.sys, "executable", str(tmp_path / "bin" / "python"))  # no elmlab beside it
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "elmlab").write_text("#!/bin/sh\necho refusing to start; exit 3\n")
    (tmp_path / "bin" / "elmlab").chmod(0o755)
    with pytest.raises(RuntimeError, match="did not start:\nrefusing to start"), pages.serve(tmp_path):
        pass
