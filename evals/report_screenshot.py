"""Render a run's HTML report in headless Chromium: a screenshot, and counts of what shows.

    python -m evals.report_screenshot RUN_ID [--unit N] [--runs-dir runs] [--png FILE]

Writes the report (`agent.ui.report.write_report`), screenshots the index (or the unit's page),
then loads every page with a probe script that counts the images that decoded and the units
shown. Prints one JSON line per page; exits 1 when an image is broken or a unit is missing.
Needs Debian's chromium (`apt-get install chromium`) at /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT = 90
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = "probe loaded=" + loaded + " images=" + images.length
    + " units=" + document.querySelectorAll("[data-unit]").length;
});
</script>"""
PROBE_TITLE = re.compile(r"<title>probe loaded=(\d+) images=(\d+) units=(\d+)</title>")


def chromium(*args: str) -> str:
    """Run headless Chromium offline with a throwaway profile; returns its stdout."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is absent: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="line-chromium-") as profile:
        command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 1600) -> Path:
    chromium(f"--screenshot={png.resolve()}", f"--window-size={width},{height}", page.resolve().as_uri())
    return png


def probe(page: Path) -> dict:
    """Load a copy of `page` (beside it, so relative paths hold) with the probe script; returns
    {page, images, loaded, units}."""
    copy = page.with_name(f".probe-{page.name}")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    try:
        match = PROBE_TITLE.search(chromium("--dump-dom", copy.resolve().as_uri()))
    finally:
        copy.unlink(missing_ok=True)
    if match is None:
        raise RuntimeError(f"the probe script did not run on {page}")
    loaded, images, units = map(int, match.groups())
    return {"page": page.name, "images": images, "loaded": loaded, "units": units}


def check(folder: Path, units: list[int]) -> list[dict]:
    """Probe the index and every unit page of a report folder; each result gets `ok`."""
    results = []
    for page in sorted(p for p in folder.glob("*.html") if not p.name.startswith(".")):
        result = probe(page)
        expected = len(units) if page.name == "index.html" else 1
        result["ok"] = result["loaded"] == result["images"] > 0 and result["units"] == expected
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    from agent.ui.report import write_report
    from agent.runs.run import Run

    parser = argparse.ArgumentParser(prog="python -m evals.report_screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--unit", type=int, help="screenshot this unit's page instead of the index")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--png", type=Path, help="where the screenshot goes (default: beside the report)")
    args = parser.parse_args(argv)
    run = Run.open(args.run_id, args.runs_dir)
    page = write_report(run, args.unit)
    if args.unit is not None:
        write_report(run)  # the index and the other pages, so that every page is checked
    png = screenshot(page, args.png or page.with_suffix(".png"))
    results = check(page.parent, sorted(run.states()))
    for result in results:
        print(json.dumps(result))
    print(json.dumps({"screenshot": str(png), "pages": len(results), "ok": all(r["ok"] for r in results)}))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
