"""The report and annotate on real plmsae objects: a tiny ESM-2, an activation store written by
`plmsae embed`, and an SAE checkpoint (randomly initialised TopK, saved with `SAE.save`)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from synthetic import accession, detail_letters, make_assoc_dir, random_sequence

from plmsae.atlas.report import report
from plmsae.atlas.tracks import residue_tracks

LAYER = 2


@pytest.fixture(scope="module")
def stack(tiny_esm_dir, tmp_path_factory):
    import torch

    from plmsae.data.fasta import read_fasta
    from plmsae.embedding.embedder import embed
    from plmsae.embedding.model import load_model
    from plmsae.sae.architectures import create_sae
    from plmsae.sae.base import SAEConfig
    from plmsae.sae.checkpoint import save_sae

    base = tmp_path_factory.mktemp("stack")
    fasta = base / "tiny.fasta"
    fasta.write_text(
        "".join(
            f">sp|{accession(i)}|T{i}_HUMAN test protein {i} OS=Homo sapiens OX=9606 GN=T{i}"
            f"\n{random_sequence(n, i)}\n"
            for i, n in enumerate([40, 75, 120, 33, 90, 61, 150, 48])
        )
    )
    lm = load_model(tiny_esm_dir)
    store = embed(fasta, out=base / "store", model=str(tiny_esm_dir), layers=[LAYER]).store
    torch.manual_seed(0)
    cfg = SAEConfig(
        arch="topk",
        d_in=lm.spec.d_model,
        d_sae=48,
        k=6,
        model=lm.spec.to_dict(),
        layer=LAYER,
        level="residue",
        normalisation="none",
    )
    sae = create_sae(cfg, generator=torch.Generator().manual_seed(0))
    save_sae(sae, base / "sae")
    proteins = read_fasta(fasta)
    assoc = make_assoc_dir(
        base / "assoc",
        n_features=48,
        ids=[p.id for p in proteins],
        lengths=[len(p.sequence) for p in proteins],
        run_extra={
            "sae": str(base / "sae"),
            "store": str(store),
            "layer": LAYER,
            "model": lm.spec.to_dict(),
        },
    )
    return {
        "base": base,
        "fasta": fasta,
        "store": Path(store),
        "sae": base / "sae",
        "assoc": assoc,
        "proteins": proteins,
        "model": tiny_esm_dir,
    }


def test_residue_tracks_match_sae_encode(stack):
    import torch

    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae

    needed = {stack["proteins"][0].id: {1, 5}, stack["proteins"][2].id: {5}}
    tracks = residue_tracks(stack["sae"], stack["store"], needed, layer=LAYER, batch_tokens=50)
    assert set(tracks) == {
        (1, stack["proteins"][0].id),
        (5, stack["proteins"][0].id),
        (5, stack["proteins"][2].id),
    }
    store, sae = ActivationStore(stack["store"]), load_sae(stack["sae"])
    for (f, pid), t in tracks.items():
        with torch.no_grad():
            z = sae.encode(torch.from_numpy(store.residues(pid, LAYER))).numpy()
        assert t.shape == (len(z),)
        np.testing.assert_allclose(t.astype(np.float32), z[:, f], rtol=2e-3, atol=2e-3)


def test_report_draws_real_tracks(stack, tmp_path):
    import shutil

    import pandas as pd

    # an annotation file without protein names: the names come from the FASTA's UniProt headers
    assoc = tmp_path / "assoc"
    shutil.copytree(stack["assoc"], assoc)
    pd.read_parquet(assoc / "proteins.parquet").assign(name="").to_parquet(
        assoc / "proteins.parquet"
    )
    report(assoc, out=tmp_path / "site", max_features=6)
    meta = json.loads((tmp_path / "site" / "site.json").read_text())
    assert meta["tracks"] is True and meta["track_note"] is None
    seqs = {p.id: p.sequence for p in stack["proteins"]}
    tracks = residue_tracks(
        stack["sae"],
        stack["store"],
        {pid: set(range(48)) for pid in seqs},
        layer=LAYER,
    )
    drawn = 0
    for page in (tmp_path / "site" / "features").iterdir():
        html = page.read_text()
        f = int(page.stem)
        top = html.split("Inactive examples")[0].split("Top-activating proteins")[1]
        for block in top.split('<article class="protein">')[1:]:
            pid = re.search(r"uniprotkb/(\w+)/entry", block).group(1)
            drawn += 1
            # names and organisms from the UniProt headers of the store's input FASTA
            i = [p.id for p in stack["proteins"]].index(pid)
            assert f'<span class="pname">test protein {i}</span>' in block
            assert '<span class="org">Homo sapiens</span>' in block
            track = tracks[(f, pid)].astype(np.float32)
            marked = re.search(r'<g class="peak" data-residue="(\d+)">', block)
            if track.max() <= 0:  # (the synthetic top proteins need not excite the real SAE)
                assert marked is None
                continue
            peak = int(marked.group(1)) - 1
            assert track[peak] == pytest.approx(track.max(), rel=2e-3)  # the marked peak
            lo, letters = detail_letters(block)
            assert letters == seqs[pid][lo : lo + len(letters)] and lo <= peak < lo + len(letters)
    assert drawn > 0


def _annotate_app():
    import typer

    from plmsae.atlas.annotate import AnnotateConfig, annotate
    from plmsae.cli.atlas import show_annotate
    from plmsae.cli.build import build_command

    app = typer.Typer()
    app.command("annotate")(build_command(AnnotateConfig, annotate.run, show_annotate))

    @app.command("other")
    def other() -> None:  # a second command keeps "annotate" a subcommand
        pass

    return app


def test_annotate_sequence(stack, tmp_path):
    import torch
    from rich.console import Console

    from plmsae.atlas.annotate import annotate
    from plmsae.cli.atlas import show_annotate
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae

    p = stack["proteins"][2]
    site = tmp_path / "site"
    report(stack["assoc"], out=site, tracks=False)
    res = annotate(
        p.sequence,
        sae=stack["sae"],
        assoc=stack["assoc"],
        html=tmp_path / "out" / "a.html",
        out=tmp_path / "a.json",
        top=5,
        site=site,
    )
    assert res.html == tmp_path / "out" / "a.html" and res.out == tmp_path / "a.json"
    [r] = res.proteins
    assert r["id"] == "query" and r["length"] == len(p.sequence) and 0 < len(r["features"]) <= 5
    # the same numbers as encoding the stored activations of this protein (same embedding code)
    with torch.no_grad():
        z = (
            load_sae(stack["sae"])
            .encode(torch.from_numpy(ActivationStore(stack["store"]).residues(p.id, LAYER)))
            .numpy()
        )
    pooled = z.max(0)
    # ranked by activation relative to each feature's maximum in the atlas
    import pandas as pd

    feats = pd.read_parquet(stack["assoc"] / "features.parquet")
    max_act = (
        feats[feats.source == "sae"]
        .set_index("feature")["max_activation"]
        .reindex(range(len(pooled)))
        .to_numpy()
    )
    rel = np.where(max_act > 0, pooled / np.where(max_act > 0, max_act, 1), 0)
    density = feats[feats.source == "sae"].set_index("feature")["density"]
    listed = r["features"] + r["chemistry"]
    for f in listed:
        assert f["activation"] == pytest.approx(pooled[f["feature"]], rel=1e-3, abs=1e-4)
        # relative activation capped at 100 %, flagged when the query exceeds the atlas maximum
        assert f["relative"] == pytest.approx(min(rel[f["feature"]], 1.0), rel=1e-3)
        assert f["above_max"] == bool(rel[f["feature"]] > 1)
        assert f["spans"] and all(
            z[s[2], f["feature"]] >= 0.5 * pooled[f["feature"]] - 1e-4 for s in f["spans"]
        )
        # a concept is claimed only above the association's threshold
        if f["concept"]:
            assert f["activation"] > f["threshold"] * max_act[f["feature"]]
            assert f["evidence"] == "associated" and f["label"] == f["concept_name"]
    # specific features ranked by evidence, then relative activation x (1 - density)
    key = [
        (
            ["associated", "described", "none"].index(f["evidence"]),
            -f["relative"] * (1 - f["density"]),
        )
        for f in r["features"]
    ]
    assert key == sorted(key) and all(f["group"] == "specific" for f in r["features"])
    assert all(density[f["feature"]] < 0.5 for f in r["features"])
    assert any(f["label"] for f in r["features"])  # labels from the association directory
    console = Console(record=True, width=80, file=io.StringIO())
    show_annotate(res, console)
    out = console.export_text()
    assert "query" in out and str(r["features"][0]["feature"]) in out
    assert all(len(line) <= 80 for line in out.splitlines())
    html = (tmp_path / "out" / "a.html").read_text()
    assert html.count('class="track overview"') == len(listed) and "<img" not in html
    assert html.count('<g class="peak"') == len(listed)
    # features link to their atlas pages (relative links that resolve)
    links = re.findall(r'href="(\.\./site/features/\d{5}\.html)"', html)
    assert links and all((tmp_path / "out" / link).resolve().is_file() for link in links)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["proteins"][0]["features"][0]["feature"] == r["features"][0]["feature"]
    printed = json.loads(json.dumps(res.to_dict()))  # what --json prints
    assert saved == {"settings": printed["settings"], "proteins": printed["proteins"]}


def test_annotate_cli_fasta(stack, tmp_path):
    from typer.testing import CliRunner

    app = _annotate_app()
    r = CliRunner().invoke(
        app, ["annotate", str(stack["fasta"]), "--sae", str(stack["sae"]), "--top", "3"]
    )
    assert r.exit_code == 0, r.output
    for i, p in enumerate(stack["proteins"]):
        assert f"{p.id} test protein {i} (Homo sapiens), {len(p.sequence)} residues" in r.output
    assert "┃ feature ┃" in r.output and "act. ┃ fires at" in r.output, r.output
    assert "Add --assoc ASSOC_DIR to see what these features mean." in r.output
    r = CliRunner().invoke(app, ["annotate", "MKTAYJ", "--sae", str(stack["sae"])])
    assert r.exit_code == 2 and "ESM-2 does not read" in " ".join(r.output.split())


def test_annotate_cli_table_with_atlas(stack, tmp_path):
    from typer.testing import CliRunner

    app = _annotate_app()
    p = stack["proteins"][2]
    args = ["annotate", p.sequence, "--sae", str(stack["sae"]), "--assoc", str(stack["assoc"])]
    r = CliRunner().invoke(app, [*args, "--top", "4"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "layer 2, SAE with 48 features (residue level)" in " ".join(r.stdout.split())
    lines = r.stdout.splitlines()
    q = next(i for i, line in enumerate(lines) if line.startswith("query,"))
    assert lines[q] == f"query, {len(p.sequence)} residues"
    assert lines[q + 1].startswith("specific features, by evidence"), r.stdout
    head = " ".join(lines[q + 2 : q + 5])
    for word in ("feature", "rel.", "fires at", "label (evidence)", "dens."):
        assert word in head, r.stdout  # the column headers (whole words at 80 columns)
    assert all(len(line) <= 80 for line in lines)
    assert "capped at 100%" in " ".join(r.stdout.split())
    assert "Add --assoc" not in r.stdout
    r = CliRunner().invoke(app, [*args, "--quiet", "--out", str(tmp_path / "q.json")])
    assert r.exit_code == 0 and r.stdout == ""
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["settings"]["assoc"] == str(stack["assoc"]) and len(saved["proteins"]) == 1
    r = CliRunner().invoke(app, [*args, "--top", "2", "--json"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert len(printed["proteins"][0]["features"]) == 2 and printed["out"] is None


def test_annotate_bad_options(stack, tmp_path):
    from plmsae._util import InputError
    from plmsae.atlas.annotate import annotate

    with pytest.raises(InputError, match=r"--top 0: must be at least 1\. Fix: pass --top 10"):
        annotate("MKT", sae=stack["sae"], top=0)
    with pytest.raises(InputError, match=r"--frac 1\.5: must be in \(0, 1\]\."):
        annotate("MKT", sae=stack["sae"], frac=1.5)
    with pytest.raises(InputError, match=r"no SAE checkpoint here .* Fix: point --sae"):
        annotate("MKT", sae=tmp_path)
    with pytest.raises(InputError, match=r"--html is a directory\. Fix: give --html a file"):
        annotate("MKT", sae=stack["sae"], html=tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match=r"--out cannot be written: .*f\.txt is a file"):
        annotate("MKT", sae=stack["sae"], out=tmp_path / "f.txt" / "a.json")


def test_annotate_protein_level_sae(stack, tmp_path):
    import torch

    from plmsae._util import read_json, write_json
    from plmsae.atlas.annotate import annotate
    from plmsae.embedding.store import ActivationStore
    from plmsae.sae.checkpoint import load_sae, save_sae

    d = tmp_path / "sae_protein"
    save_sae(load_sae(stack["sae"]), d)
    cfg = read_json(d / "cfg.json")
    write_json(d / "cfg.json", cfg | {"level": "protein", "pooling": "mean"})
    p = stack["proteins"][1]
    [r] = annotate(p.sequence, sae=d, top=4, html=tmp_path / "p.html", quiet=True).proteins
    with torch.no_grad():
        z = (
            load_sae(d)
            .encode(torch.from_numpy(ActivationStore(stack["store"]).pooled(p.id, LAYER))[None])[0]
            .numpy()
        )
    assert [f["feature"] for f in r["features"]] == list(
        np.argsort(-z, kind="stable")[: len(r["features"])]
    )
    assert all(f["track"] is None and f["spans"] == [] for f in r["features"])
    assert 'class="track"' not in (tmp_path / "p.html").read_text()


def test_report_without_the_fasta_draws_tracks_without_letters(stack, tmp_path):
    report(stack["assoc"], out=tmp_path / "site", max_features=2, fasta=tmp_path / "moved.fasta")
    html = next((tmp_path / "site" / "features").iterdir()).read_text()
    assert 'class="track overview"' in html and "Residue letters are not drawn" in html
    assert 'class="seq"' not in html
