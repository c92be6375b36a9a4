"""Every page reaches its first content in a real browser over the demo set and over the 100k-run
benchmark store (benchmarks.pages, which holds the time targets; this test asserts no time). The
figures go to test-artifacts/e2e/first-content.json."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from benchmarks import pages as bench
from tests.e2e.conftest import ARTIFACTS, running_elmlab

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=list(bench.TARGET_S))
def filled_up(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A read-only `elmlab up` over a store filled with the demo set or the benchmark runs."""
    home = tmp_path_factory.mktemp(f"elmlab-{request.param}")
    bench.fill(home, request.param, 100_000)
    with running_elmlab(home, "--read-only") as url:
        yield request.param, url


def test_every_page_shows_its_first_content(filled_up: tuple[str, str], page):
    store, url = filled_up
    timed = bench.time_pages(page, url, repeats=1)  # a page that never shows its title fails here
    assert set(timed["pages"]) == {p or "design" for p in bench.PAGES}
    for p in bench.PAGES:  # the page rendered, not an exception in its place
        bench.first_content(page, f"{url}/{p}")
        assert page.locator("[data-testid='stException']").count() == 0, p or "design"
    out = ARTIFACTS / "first-content.json"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    results[store] = timed
    out.write_text(json.dumps(results, indent=1))
    print(f"first content over the {store} store: {timed}")
