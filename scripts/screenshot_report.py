"""Screenshots of a plmsae report for the docs: index.png and feature.png.

    python scripts/screenshot_report.py SITE OUTDIR [--feature N] [--width 1280]

Opens SITE/index.html from disk in headless Chromium (/usr/bin/chromium, driven by Playwright;
no browser download), then the page of the feature given (default: the first feature in the
table that has a page and an associated concept, else the first with a page).
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

    # a described, associated feature that fires on few proteins shows the atlas best
    described = sorted(
        (r for r in paged if r["n_associated"] and r["description"]),
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
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(
            viewport={"width": a.width, "height": a.height}, device_scale_factor=1
        )
        page.goto((site / "index.html").as_uri())
        page.wait_for_selector("#rows tr")
        page.screenshot(path=str(a.outdir / "index.png"), full_page=a.full_page)
        page.goto((site / "features" / f"{feature:05d}.html").as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(a.outdir / "feature.png"), full_page=a.full_page)
        browser.close()
    print(f"wrote {a.outdir / 'index.png'} and {a.outdir / 'feature.png'} (feature {feature})")


if __name__ == "__main__":
    main()
