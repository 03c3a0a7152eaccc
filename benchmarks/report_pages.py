"""How fast `plmsae report` writes a large atlas, and how fast its table searches in a browser.

    python benchmarks/report_pages.py [--features 20000] [--proteins 2000] [--tracks] [--json]

Builds a synthetic association directory (tests/atlas/synthetic.py, the design.md format, with
the specificity columns and headline block) with N SAE features, writes the report, and reports
pages/s, sizes, and (when /usr/bin/chromium exists) the time the index takes to load its table
data and to apply a search over all rows in headless Chromium. Without ``--tracks`` no residue
tracks are drawn; with it, every top protein gets a synthetic per-residue track (a random peak)
and a sequence, so the pages hold what a real residue-level atlas draws (overview, detail view,
sequence logo) without the cost of encoding proteins with an SAE, which is not page writing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests" / "atlas")]
os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")


def browser_timings(site: Path) -> dict | None:
    if not Path("/usr/bin/chromium").exists():
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        pg = b.new_page()
        t0 = time.perf_counter()
        pg.goto((site / "index.html").as_uri())
        pg.wait_for_selector("#rows tr")
        load = time.perf_counter() - t0
        # time one search over every row, measured inside the page from the input event to the
        # updated row count (the 120 ms typing debounce is subtracted)
        search_ms = pg.evaluate("""() => new Promise(resolve => {
            const q = document.getElementById('q'), count = document.getElementById('count');
            const obs = new MutationObserver(() => { obs.disconnect(); resolve(performance.now() - t0 - 120); });
            obs.observe(count, {childList: true, characterData: true, subtree: true});
            const t0 = performance.now(); q.value = 'kind 1234'; q.dispatchEvent(new Event('input')); })""")
        sort_t0 = time.perf_counter()
        pg.click("th[data-key=density]")
        sort = time.perf_counter() - sort_t0
        b.close()
    return {
        "index_load_s": round(load, 3),
        "search_ms": round(search_ms, 1),
        "sort_click_s": round(sort, 3),
    }


@contextlib.contextmanager
def synthetic_tracks(assoc: Path, work: Path):
    """Residue tracks and sequences for the report without an SAE: each (feature, protein) gets
    a track with a random peak, each protein a random sequence of its length."""
    import numpy as np
    from synthetic import random_sequence

    from plmsae.atlas import tracks
    from plmsae.atlas.model import load_atlas

    prot = load_atlas(assoc, activations=False).proteins
    lengths = dict(zip(prot["id"], prot["length"].astype(int)))
    rng = np.random.default_rng(0)

    def fake(sae_path, store_path, needed, layer=None, on_protein=None, **kw):
        out = {}
        for pid, feats in needed.items():
            for f in feats:
                t = np.zeros(lengths[pid], np.float16)
                c = int(rng.integers(0, lengths[pid]))
                t[max(0, c - 3) : c + 4] = rng.uniform(0.5, 3.0, size=len(t[max(0, c - 3) : c + 4]))
                out[(f, pid)] = t
        return out

    def sequences(fasta, ids):
        return {pid: random_sequence(lengths[pid], i) for i, pid in enumerate(sorted(ids))}

    saved = tracks.residue_tracks, tracks.read_sequences
    tracks.residue_tracks, tracks.read_sequences = fake, sequences
    (work / "sae").mkdir(exist_ok=True)
    (work / "store").mkdir(exist_ok=True)
    try:
        yield {"sae": work / "sae", "store": work / "store"}
    finally:
        tracks.residue_tracks, tracks.read_sequences = saved


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--features", type=int, default=20000)
    ap.add_argument("--proteins", type=int, default=2000)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep the synthetic data and site here"
    )
    ap.add_argument("--tracks", action="store_true", help="draw synthetic residue tracks")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    from synthetic import make_assoc_dir

    from plmsae.atlas.report import report

    work = a.workdir or Path(tempfile.mkdtemp(prefix="plmsae-report-bench-"))
    assoc = work / f"assoc_{a.features}_{a.proteins}"
    t0 = time.perf_counter()
    if not (assoc / "summary.json").exists():
        make_assoc_dir(assoc, n_proteins=a.proteins, n_features=a.features, seed=0, science=True)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    if a.tracks:
        with synthetic_tracks(assoc, work) as paths:
            report(assoc, out=work / "site", **paths)
    else:
        report(assoc, out=work / "site", tracks=False)
    t_report = time.perf_counter() - t0
    site = json.loads((work / "site" / "site.json").read_text())
    pages = list((work / "site" / "features").iterdir())
    out = {
        "features": a.features,
        "proteins": a.proteins,
        "tracks": site["tracks"],
        "pages": site["n_pages"],
        "report_seconds": round(t_report, 2),
        "page_seconds": site["page_seconds"],
        "pages_per_second": site["pages_per_second"],
        "mean_page_kib": round(sum(p.stat().st_size for p in pages) / len(pages) / 1024, 1),
        "table_data_mib": round(
            (work / "site" / "assets" / "atlas-data.js").stat().st_size / 2**20, 2
        ),
        "synthetic_data_seconds": round(t_data, 1),
        "browser": browser_timings(work / "site"),
    }
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
