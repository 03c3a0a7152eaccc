import gzip
import importlib.util
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from plmsae._util import InputError, sha256_file
from plmsae.data.annotations import read_annotations
from plmsae.data.demo import demo_paths
from plmsae.data.fasta import read_fasta
from plmsae.data.ontology import Ontology

MINI_OBO = Path(__file__).parent / "files" / "mini.obo"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_demo_data.py"


def _script():
    """scripts/make_demo_data.py (a developer tool outside the package) as a module."""
    spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the importlib recipe; dataclasses look the module up
    spec.loader.exec_module(module)
    return module


make_subset = _script().make_subset


def provenance_record(path: Path) -> dict:
    text = path.read_text()
    return json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))


@pytest.fixture(scope="module")
def demo():
    paths = demo_paths()
    onto = Ontology.load(paths.ontology)
    return paths, read_fasta(paths.fasta), onto, read_annotations(paths.annotations, onto)


def test_bundled_demo_matches_provenance(demo):
    paths, proteins, onto, ann = demo
    record = provenance_record(paths.provenance)
    c = record["counts"]
    lengths = [len(p) for p in proteins]
    assert len(proteins) == c["proteins"] == record["settings"]["n"]
    assert sum(lengths) == c["residues"]
    assert min(lengths) == c["min_length"] >= 50 and max(lengths) == c["max_length"] <= 600
    assert len(onto.terms) == c["ontology_terms"] and onto.n_obsolete == c["ontology_obsolete"]
    assert len(onto.alt_ids) == c["ontology_alt_ids"]
    raw = read_annotations(paths.annotations).protein_concepts["GO"]
    assert sum(len(t) for t in raw.values()) == c["annotations_raw"]
    assert set(raw) == {p.id for p in proteins}
    for cat in ("GO:BP", "GO:MF", "GO:CC"):
        assert len(ann.protein_concepts[cat]) == c["proteins_per_namespace"][cat]
    for name, info in record["files"].items():
        assert sha256_file(paths.fasta.parent / name) == info["sha256"]
    total = sum(p.stat().st_size for p in (paths.fasta, paths.annotations, paths.ontology))
    assert total < 2_000_000


def test_bundled_demo_covers_all_namespaces(demo):
    paths, proteins, onto, ann = demo
    record = provenance_record(paths.provenance)
    for cat in ("GO:BP", "GO:MF", "GO:CC"):
        counts = Counter(t for terms in ann.protein_concepts[cat].values() for t in terms)
        frequent = sum(1 for k in counts.values() if k >= 30)
        assert frequent >= 20
        assert frequent == record["counts"]["terms_with_30_proteins"][cat]
        # every propagated term is known to the bundled ontology, in the right namespace
        assert all(onto.category(t) == cat for t in counts)
    # the demo exercises the clean-up of real data: alt IDs and obsolete terms occur
    assert ann.counts["go_alt_ids_mapped"] > 0 and ann.counts["go_obsolete_or_unknown"] > 0
    assert all(set(p.sequence) <= set("ACDEFGHIKLMNPQRSTVWY") for p in proteins)


def fake_reference(tmp_path: Path) -> Path:
    """A 300-protein stand-in for ../shared/data built on the hand-written mini ontology."""
    d = tmp_path / "ref"
    d.mkdir()
    rng = random.Random(1)
    fasta, tsv = [], []
    leaves = ["GO:0000013", "GO:0000099", "GO:0000030", "GO:0000020", "GO:0000011"]
    for i in range(300):
        length = rng.choice([30, 80, 120, 200, 700])
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(length))
        if i % 17 == 0:
            seq = seq[:10] + "X" + seq[11:]
        acc = f"Q{i:05d}"
        fasta.append(f">{acc}\n{seq}\n")
        terms = rng.sample(leaves, rng.randint(0, 2))
        if i % 20 == 0:
            terms.append("GO:0000040")  # 5%: a 'common but not trivial' target term
        if i % 25 == 0:
            terms.append("GO:0000005")  # obsolete
        if terms:
            tsv.append(f"{acc}\t{';'.join(terms)}\n")
    with gzip.open(d / "swissprot2014.fasta.gz", "wt") as fh:
        fh.write("".join(fasta))
    with gzip.open(d / "swissprot2014_go.tsv.gz", "wt") as fh:
        fh.write("".join(tsv))
    with gzip.open(d / "go-basic-2022-07-01.obo.gz", "wt") as fh:
        fh.write(MINI_OBO.read_text())
    return d


def test_make_subset_is_deterministic_and_self_consistent(tmp_path):
    ref = fake_reference(tmp_path)
    kw = dict(n=40, min_length=50, max_length=600, seed=3, terms_per_namespace=5, min_proteins=8)
    rec1 = make_subset(tmp_path / "a", ref, **kw)
    rec2 = make_subset(tmp_path / "b", ref, **kw)
    assert rec1["files"] == rec2["files"]  # byte-identical outputs
    rec3 = make_subset(tmp_path / "c", ref, **{**kw, "seed": 4})
    assert rec3["files"]["demo.fasta.gz"] != rec1["files"]["demo.fasta.gz"]

    proteins = read_fasta(tmp_path / "a" / "demo.fasta.gz")
    assert len(proteins) == 40 and all(
        50 <= len(p) <= 600 and "X" not in p.sequence for p in proteins
    )
    onto = Ontology.load(tmp_path / "a" / "demo_go.obo.gz")
    assert onto.n_obsolete == 1 and onto.primary("GO:0000099") == "GO:0000013"
    ann = read_annotations(tmp_path / "a" / "demo_go.tsv.gz", onto)
    mf = ann.protein_concepts["GO:MF"]
    assert sum(1 for t in mf.values() if "GO:0000040" in t) >= 8  # the quota was met
    assert rec1["counts"]["targets_below_quota"] == 0
    assert provenance_record(tmp_path / "a" / "PROVENANCE.md") == rec1


def test_make_subset_errors(tmp_path):
    with pytest.raises(InputError, match="reference data file not found"):
        make_subset(tmp_path / "o", tmp_path)
    ref = fake_reference(tmp_path)
    with pytest.raises(InputError, match=r"asked for 5000 proteins, only \d+ qualify"):
        make_subset(tmp_path / "o", ref, n=5000)


@pytest.mark.slow
def test_regenerating_the_demo_gives_the_bundled_files(shared_data, tmp_path):
    paths = demo_paths()
    record = provenance_record(paths.provenance)
    got = make_subset(tmp_path, shared_data, **record["settings"])
    assert got["files"] == record["files"]
    assert got == record
    # every bundled file, PROVENANCE.md included, byte for byte
    for p in (paths.fasta, paths.annotations, paths.ontology, paths.provenance):
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name
