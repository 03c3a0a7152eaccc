"""Screenshots of a plmsae report for the docs: index.png, feature.png (and annotate.png).

    python scripts/screenshot_report.py SITE OUTDIR [--feature N] [--annotate PAGE.html]
        [--width 1280] [--full-page]

Opens SITE/index.html from disk in headless Chromium (/usr/bin/chromium, driven by Playwright;
no browser download), then the page of the feature given (default: a specific, described and
associated feature with few active proteins, else the first associated one, else the first with
a page), scrolled to its top-activating proteins, and, with ``--annotate``, a page written by
``plmsae annotate --html``. Console errors are reported and fail the run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pick_feature(site: Path) -> int:
    text = (site / "assets" / "atlas-data.js").read_text()
    data = json.loads(
        re.sub(r"^.*?window\.PLMSAE_ATLAS = ", "", text, flags=re.S).rstrip().rstrip(";")
    )
    paged = [r for r in data["rows"] if r["page"]]
    if not paged:
        sys.exit(f"{site}: the report has no feature pages")

    def best_q(r):
        return r["best_q"] if r["best_q"] is not None else 1.0

    # a specific, described, associated feature that fires on few proteins shows the atlas best
    described = sorted(
        (
            r
            for r in paged
            if r["n_associated"] and r["description"] and r.get("kind", "specific") == "specific"
        ),
        key=lambda r: ((r["density"] or 0) > 0.2, best_q(r)),
    )
    assoc = sorted((r for r in paged if r["n_associated"]), key=best_q)
    return (described or assoc or paged)[0]["feature"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("site", type=Path)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--feature", type=int, default=None)
    ap.add_argument("--annotate", type=Path, default=None, help="a page of plmsae annotate --html")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument(
        "--full-page", action="store_true", help="capture the whole page, not the first screen"
    )
    a = ap.parse_args()
    site = a.site.resolve()
    if not (site / "index.html").exists():
        sys.exit(f"{site}: no index.html (write it with `plmsae report ASSOC_DIR --out SITE`)")
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    feature = a.feature if a.feature is not None else pick_feature(site)
    a.outdir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(
            viewport={"width": a.width, "height": a.height}, device_scale_factor=1
        )
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector("#rows tr")
        written.append(shot(page, a.outdir / "index.png", a.full_page))
        page.goto((site / "features" / f"{feature:05d}.html").as_uri())
        page.wait_for_load_state("load")
        if not a.full_page:  # the tracks, the peak and the logo are what the page is for
            page.locator("h2", has_text="Top-activating proteins").evaluate(
                "e => e.scrollIntoView()"
            )
        written.append(shot(page, a.outdir / "feature.png", a.full_page))
        if a.annotate is not None:
            page.goto(a.annotate.resolve().as_uri())
            page.wait_for_load_state("load")
            written.append(shot(page, a.outdir / "annotate.png", a.full_page))
        browser.close()
    if errors:
        sys.exit(f"console errors: {errors}")
    print(f"wrote {', '.join(map(str, written))} (feature {feature})")


def shot(page, path: Path, full_page: bool) -> Path:
    page.screenshot(path=str(path), full_page=full_page)
    return path


if __name__ == "__main__":
    main()
