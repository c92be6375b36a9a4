"""End to end in a real headless Chromium against `elmlab up`: queue a tiny run and a tiny iso-budget sweep
from the Design page, watch them reach `done` on the Runs page (which refreshes by itself), read the
optimum off the Explore page, open the shared URL in a fresh session and find the same view, download the
HTML report, and cancel a long run while it trains. Then a read-only dashboard over the demo set: its
startup line, the Scaling page's parameter tables and suggested next runs whole at 1400 px, no broker
banner, and a plain drag on the Explore chart that pans, as its caption says. Screenshots: test-artifacts/e2e/."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.pages import ROOT, elmlab_env
from tests.e2e.conftest import ARTIFACTS, running_elmlab

pytestmark = pytest.mark.e2e

TINY = {  # a run that trains in a second or two on a CPU
    "training steps": "5",
    "batch size": "2",
    "sequence length (characters)": "20",
    "validation characters": "200",
    "test characters": "200",
}


def settle(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_selector("[data-testid='stApp']")
    page.wait_for_timeout(400)
    page.wait_for_function(
        "() => { const w = document.querySelector('[data-testid=\"stStatusWidget\"]');"
        " return !w || !/Running/.test(w.innerText); }",
        timeout=timeout,
    )
    page.wait_for_timeout(300)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(page)


def nav(page, name: str) -> None:
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=name).click()
    settle(page)


def metric(page, name: str):
    return page.locator("[data-testid='stMetric']").filter(has_text=re.compile(rf"^{re.escape(name)}"))


def test_queue_watch_explore_share_and_report(elmlab_up: str, page):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a loaded machine reruns slowly; a wait is not a failure
    # Design: a budget, a tiny protocol, queue.
    page.goto(elmlab_up)
    settle(page)
    expect(page.get_by_role("heading", name="Design and queue")).to_be_visible(timeout=60_000)  # a fresh server
    fill(page, "Budget (parameters)", "40000")
    page.get_by_text("Advanced: training length").click()
    for label, value in TINY.items():
        fill(page, label, value)
    expect(metric(page, "Parameters (exact)")).to_contain_text("39,")
    shot(page, "01-design")
    page.get_by_role("button", name="Queue this run").click()
    settle(page)
    expect(page.get_by_text(re.compile(r"queued 1 run\(s\)"))).to_be_visible()
    fill(page, "d_m values", "1, 2, 4, 16")
    page.get_by_role("button", name="Queue an iso-budget sweep").click()
    settle(page)
    expect(page.get_by_text(re.compile(r"Iso-budget sweep: queued 4 run\(s\)"))).to_be_visible()
    shot(page, "02-design-queued")

    # Runs: the page refreshes by itself until the run is done.
    nav(page, "Runs")
    expect(metric(page, "done")).to_contain_text("5", timeout=150_000)
    expect(metric(page, "broker")).to_contain_text("up")
    shot(page, "03-runs-done")

    # Explore: the chart renders; switch to the Pareto view with a log y axis.
    nav(page, "Explore")
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    expect(page.get_by_role("heading", name="Optimum per budget")).to_be_visible()  # the sweep's fit
    # five single-seed points: the interval needs more points than that to estimate the noise, and says so
    expect(page.get_by_text(re.compile(r"95% bootstrap interval|no interval \(too few runs\)")).first).to_be_visible()
    shot(page, "04-explore-iso")
    # Click a point: its runs open in Run detail with their learning curves.
    page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.click(force=True)
    settle(page)
    page.get_by_role("link", name=re.compile(r"Open the \d+ selected run")).click()
    settle(page)
    expect(page.get_by_role("heading", name="Run detail and compare")).to_be_visible()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    assert "runs=" in page.url
    shot(page, "05-run-detail")
    nav(page, "Explore")
    page.get_by_role("radio", name="Pareto frontier").click()
    settle(page)
    page.get_by_text("log y", exact=True).click()
    settle(page)
    expect(page.locator(".js-plotly-plot .gtitle").first).to_contain_text("Pareto frontier")
    shot(page, "06-explore-pareto")
    shared = page.url
    assert "view=" in shared and "logy=" in shared, shared
    assert shared in page.locator("[data-testid='stSidebar'] [data-testid='stCode']").inner_text().replace("\n", "")

    # The shared URL in a fresh session shows the same view.
    other = page.context.new_page()
    other.goto(shared)
    settle(other)
    expect(other.locator(".js-plotly-plot .gtitle").first).to_contain_text("Pareto frontier")
    expect(other.get_by_label("log y", exact=True)).to_be_checked()
    expect(other.get_by_role("radio", name="Pareto frontier")).to_have_attribute("aria-checked", "true")
    expect(other.locator("[data-testid='stSidebar'] [data-testid='stCode']")).to_contain_text("view=")
    shot(other, "07-shared-url")
    other.close()

    # The HTML report of this view.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download this view as an HTML report").click()
    path = ARTIFACTS / "report-explore.html"
    download.value.save_as(path)
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "Pareto frontier" in html and "plotly-graph-div" in html
    assert len(html) > 1_000_000  # plotly.js inline: it opens offline
    report = page.context.new_page()
    report.goto(path.as_uri())
    expect(report.locator(".js-plotly-plot").first).to_be_visible()
    shot(report, "08-report")
    report.close()

    # A long run, seen training (progress bar with step, loss, throughput, ETA), cancelled from Runs.
    page.goto(f"{elmlab_up}/?budget=40000&steps=20000&batch=2&seq_len=20&eval_chars=200&test_chars=200")
    settle(page)
    queue_run = page.get_by_role("button", name="Queue this run")
    expect(queue_run).to_be_visible()
    if queue_run.is_disabled():  # an estimate over an hour asks first
        page.get_by_text(re.compile(r"^I mean it: queue even though")).first.click()
        settle(page)
    expect(queue_run).to_be_enabled()
    queue_run.click()
    settle(page)
    nav(page, "Runs")
    line = page.get_by_text(re.compile(r"step [\d,]+/20,000 · loss [\d.]+ · [\d,]+ tokens/s · ETA"))
    expect(line).to_be_visible(timeout=90_000)
    run_id = line.inner_text().split(":")[0].strip()
    # The live panel draws the running run's curve from the progress channel, and redraws it.
    # Located by the chart's key: while the fragment redraws, the previous copy can linger for a moment.
    live = page.locator(".st-key-live_curves .js-plotly-plot").last
    expect(live).to_be_visible(timeout=30_000)
    expect(live).to_contain_text("Live learning curves")
    expect(live.locator(".scatterlayer .trace").first).to_be_attached(timeout=30_000)
    shot(page, "09-runs-training")
    # Run detail follows it too: a curve that grows, the live status, never "No learning curve recorded".
    page.goto(f"{elmlab_up}/run?runs={run_id}")
    settle(page)
    chart = page.locator(".js-plotly-plot").first
    expect(chart.locator(".scatterlayer .trace").first).to_be_attached(timeout=30_000)
    expect(page.get_by_text(re.compile(rf"{re.escape(run_id)}: step [\d,]+/20,000"))).to_be_visible()
    assert "No learning curve recorded" not in chart.inner_text()
    first = chart.locator(".scatterlayer .trace path.js-line").first.get_attribute("d") or ""
    page.wait_for_timeout(5_000)  # two refreshes later the line has grown (more points, a longer path)
    assert len(chart.locator(".scatterlayer .trace path.js-line").first.get_attribute("d") or "") > len(first)
    shot(page, "09b-run-detail-live")
    nav(page, "Runs")
    grid = page.get_by_test_id("stDataFrame").first.bounding_box()
    page.mouse.click(grid["x"] + 18, grid["y"] + 35 + 18)  # the newest run's row: select it
    page.get_by_role("button", name="Cancel 1 run(s)").click()
    settle(page)
    expect(metric(page, "cancelled")).to_contain_text("1", timeout=60_000)
    shot(page, "10-runs-cancelled")


@pytest.fixture(scope="module")
def demo_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`elmlab demo load` into a fresh home, then `elmlab up --read-only` on it: (URL, home)."""
    home = tmp_path_factory.mktemp("elmlab-demo")
    elmlab = Path(sys.executable).with_name("elmlab")
    subprocess.run([str(elmlab), "demo", "load"], env=elmlab_env(home), cwd=ROOT, check=True, timeout=600,
                   capture_output=True)
    with running_elmlab(home, "--read-only") as url:
        yield url, home


WIDTHS = """grid => {
  const column = grid.closest('[data-testid="stColumn"]') || grid.closest('[data-testid="stMainBlockContainer"]');
  const scrolls = [...grid.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1
    && !['visible', 'hidden'].includes(getComputedStyle(e).overflowX));
  return {right: grid.getBoundingClientRect().right, column: column.getBoundingClientRect().right,
          viewport: window.innerWidth, page: document.documentElement.scrollWidth, scrolls: scrolls.length};
}"""


@pytest.mark.timeout(900)  # a loaded machine: the first fits of a fresh server take minutes
def test_read_only_demo_tables_fit_and_the_chart_pans(demo_up: tuple[str, Path], page):
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # the first fits of a fresh server on a loaded machine
    page.set_default_navigation_timeout(120_000)
    url, home = demo_up
    for _ in range(120):  # the supervisor prints its line once every child has settled
        if "ELM Lab is up" in (started := (home / "up.log").read_text()):
            break
        page.wait_for_timeout(500)
    assert "ELM Lab is up, read-only" in started and "embedded broker" not in started, started

    # Scaling at 1400 px: the scaling law's and the capacity model's parameter tables (engineering
    # notation; tests/app/test_inputs.py) lie whole inside their column, and the suggested next runs
    # (their reasons wrapped in tall rows) inside the page: nothing to scroll sideways.
    page.goto(f"{url}/scaling")
    expect(page.get_by_role("heading", name="Suggested next runs")).to_be_visible(timeout=300_000)
    grids = page.get_by_test_id("stDataFrame")
    expect(grids.nth(2)).to_be_visible(timeout=300_000)
    assert grids.count() == 3
    for i, name in ((0, "scaling-law"), (1, "capacity-model"), (2, "suggested next runs")):
        w = grids.nth(i).evaluate(WIDTHS)
        assert w["right"] <= min(w["column"], w["viewport"]) + 1 and w["scrolls"] == 0, (name, w)
        assert w["page"] <= w["viewport"], (name, w)
    shot(page, "11-read-only-scaling")
    grids.nth(1).screenshot(path=str(ARTIFACTS / "11b-capacity-parameters.png"))
    grids.nth(2).screenshot(path=str(ARTIFACTS / "11c-suggested-next-runs.png"))

    # Runs: no broker banner on a read-only home (it has no broker), and the hint offers opening only.
    page.goto(f"{url}/runs")
    expect(page.get_by_text(re.compile(r"run\(s\) match; .* Select rows to open them\."))).to_be_visible()
    assert page.locator("[data-testid='stAlertContentError']").count() == 0
    expect(page.locator("[data-testid='stMetric']").filter(has_text="training workers")).to_be_visible()
    labels = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid="stMetricLabel"] p, [data-testid="stWidgetLabel"] p, [data-testid="stMetricValue"] div')]
        .filter(e => e.offsetWidth).map(e => [e.innerText, e.scrollWidth > e.clientWidth + 1])""")
    assert len(labels) >= 10 and not [t for t, cut in labels if cut], f"labels cut at 1400 px: {labels}"

    # Explore: the caption says a plain drag pans; the chart's drag mode is pan.
    page.goto(f"{url}/explore")
    expect(page.get_by_text(re.compile(r"a plain drag pans"))).to_be_visible()
    chart = page.locator(".js-plotly-plot").first
    expect(chart).to_be_visible()
    page.wait_for_function("() => document.querySelector('.js-plotly-plot')._fullLayout !== undefined")
    assert chart.evaluate("el => el._fullLayout.dragmode") == "pan"
