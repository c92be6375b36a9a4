"""Layout at a 1400 px wide window over the demo set (read-only `elmlab up`): the Scaling page's
parameter table fits its column, the Runs page's toggles show their whole label, and the Explore
chart opens a clicked point and a box of points as its caption says."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ROOT, elmlab_env, running_elmlab
from tests.e2e.test_browser import settle, shot
from tests.e2e.test_speed import FILL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("elmlab-demo")
    subprocess.run([sys.executable, "-c", FILL["demo"]], env=elmlab_env(home), cwd=ROOT, check=True, timeout=600)
    with running_elmlab(home, "--read-only") as url:
        yield url


def overflow(locator) -> int:
    """How many pixels of the element's content are cut off on the right (0: none)."""
    return locator.evaluate("e => e.scrollWidth - e.clientWidth")


def test_tables_and_labels_fit_and_the_chart_selects(demo_up: str, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # a loaded machine reruns slowly; a wait is not a failure
    page.set_default_timeout(120_000)
    assert page.viewport_size["width"] == 1400
    page.goto(f"{demo_up}/scaling", wait_until="commit", timeout=300_000)
    settle(page, 300_000)
    table = page.locator("[data-testid='stMain'] [data-testid='stDataFrame']").first  # the parameter table
    expect(table).to_be_visible()
    scroller = table.locator(".dvn-scroller").first
    assert overflow(scroller) <= 1, "the parameter table scrolls sideways: columns are cut off"
    box = table.bounding_box()
    column = page.locator("[data-testid='stColumn']").filter(has=table).last.bounding_box()
    assert box["x"] + box["width"] <= column["x"] + column["width"] + 1
    shot(page, "layout-scaling")

    page.goto(f"{demo_up}/runs", wait_until="commit", timeout=300_000)
    settle(page, 300_000)
    for key, label in (("group_sweep", "Group by sweep"), ("live", "Live refresh")):
        text = page.locator(f".st-key-{key} [data-testid='stMarkdownContainer'] p").first
        expect(text).to_have_text(label)
        assert overflow(text) <= 0, f"the {label!r} label is cut off"
        height = text.evaluate("e => e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)")
        assert height < 1.5, f"the {label!r} label wraps"
    shot(page, "layout-runs")

    page.goto(f"{demo_up}/explore", wait_until="commit", timeout=300_000)
    settle(page, 300_000)
    chart = page.locator(".st-key-explore_chart .js-plotly-plot")
    expect(chart.locator(".scatterlayer .trace .points path").first).to_be_attached()
    expect(page.get_by_text(re.compile("a plain drag pans"))).to_be_visible()
    modes = chart.evaluate("g => [g._fullLayout.dragmode, g._fullLayout.clickmode]")
    assert modes == ["pan", "event+select"], modes  # a click selects its point, as the caption says
    chart.locator(".scatterlayer .trace .points path").first.click(force=True)
    settle(page)
    expect(page.get_by_role("link", name=re.compile(r"Open the \d+ selected run"))).to_be_visible()
    page.mouse.dblclick(10, 10)  # away from the chart: nothing changes
    chart.locator(".modebar-btn[data-title='Box Select']").click(force=True)
    area = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + 2, area["y"] + 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] - 2, area["y"] + area["height"] - 2, steps=12)
    page.mouse.up()
    settle(page)
    link = page.get_by_role("link", name=re.compile(r"Open the \d+ selected run"))
    expect(link).to_be_visible()
    assert int(re.search(r"\d+", link.inner_text()).group()) > 1  # a box around the whole chart takes several
    shot(page, "layout-explore-box")
