"""plmsae variants on the tiny random ESM-2 with a random TopK SAE."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from plmsae._util import InputError
from plmsae.apply.common import Loaded
from plmsae.apply.variants import (
    VariantScanner,
    VariantsConfig,
    parse_variant,
    read_dms,
    variants,
)
from plmsae.cli.apply import show_variants
from plmsae.cli.build import build_command

SEQ = "MALWMRLLPLLALLALWGPDPAAAFVNQHLCGSHLVEALYLVCGERGFFYTPKTRREAEDLQVGQVELGGGPGAG"


@pytest.fixture(scope="module")
def loaded(tiny_lm, tiny_sae):
    from plmsae.apply.common import load_sae_and_model

    return load_sae_and_model(tiny_sae, None, "cpu", lm=tiny_lm)


def scan(loaded: Loaded, sae, **kw):
    return VariantScanner(VariantsConfig(SEQ, sae=sae, **kw), loaded=loaded).run()


def test_identity_mutation_changes_nothing(loaded, tiny_sae):
    res = scan(loaded, tiny_sae, mutations=["M5M", "WT", "M5A"])
    ident, wt, real = res.variants.itertuples(index=False)
    for v in (ident, wt):
        assert v.l1_site == 0 and v.l1_pooled == 0 and v.n_gained == 0 and v.n_lost == 0
        assert v.top_feature == -1
    assert not (res.changes["variant"].isin(["M5M", "WT"])).any()
    # a real substitution does change features, at its site
    assert real.l1_site > 0 and real.n_site_changed > 0
    rows = res.changes[res.changes["variant"] == "M5A"]
    assert len(rows) == 10 and (rows["site_delta"] != 0).any()
    assert np.allclose(rows["site_mut"] - rows["site_wt"], rows["site_delta"], atol=1e-6)
    assert set(rows["site_change"]) <= {"gained", "lost", "up", "down", ""}


def test_changes_match_a_direct_encoding(loaded, tiny_sae):
    """The reported activations are the SAE's codes of the embedded wild type and variant."""
    import torch

    from plmsae.atlas.annotate import embed_residues
    from plmsae.data.fasta import Protein

    res = scan(loaded, tiny_sae, mutations=["L3G:W4A"], top=64)
    mut = SEQ[:2] + "GA" + SEQ[4:]
    with torch.no_grad():
        z = [
            loaded.sae.encode(torch.from_numpy(r)).numpy()
            for r in embed_residues(loaded.lm, [Protein("w", SEQ, ""), Protein("m", mut, "")], 2)
        ]
    site = z[1][[2, 3]].sum(0) - z[0][[2, 3]].sum(0)
    pooled = z[1].max(0) - z[0].max(0)
    rows = res.changes.set_index("feature")
    for f in rows.index:
        assert rows.loc[f, "site_delta"] == pytest.approx(site[f], abs=1e-5)
        assert rows.loc[f, "pooled_delta"] == pytest.approx(pooled[f], abs=1e-5)
    big = np.flatnonzero(np.maximum(abs(site), abs(pooled)) > 1e-4)
    assert set(big) <= set(rows.index)
    assert res.variants.loc[0, "positions"] == "3,4"


def test_dms_correlation_finds_the_feature_that_tracks_the_score(loaded, tiny_sae, tmp_path):
    rng = np.random.default_rng(0)
    subs = sorted(
        {
            f"{SEQ[p]}{p + 1}{a}"
            for p, a in zip(
                rng.integers(0, len(SEQ), 40), rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 40)
            )
            if SEQ[p] != a
        }
    )
    first = scan(loaded, tiny_sae, mutations=subs, top=64)
    # the score of each variant is the pooled change of the feature changed most often
    counts = first.changes.groupby("feature")["pooled_delta"].apply(lambda s: (s != 0).sum())
    target = int(counts.idxmax())
    score = {
        v: float(g.set_index("feature")["pooled_delta"].get(target, 0.0))
        for v, g in first.changes.groupby("variant")
    }
    table = pd.DataFrame({"mutant": subs, "DMS_score": [score.get(s, 0.0) for s in subs]})
    table.to_csv(tmp_path / "dms.csv", index=False)
    res = scan(loaded, tiny_sae, dms=tmp_path / "dms.csv", out=tmp_path / "out")
    top = res.correlations.iloc[0]
    assert (top["level"], int(top["feature"])) == ("pooled", target)
    assert top["rho"] == pytest.approx(1.0) and top["q_value"] < 1e-3
    for name in ("variants", "changes", "correlations"):
        assert (tmp_path / "out" / f"{name}.tsv").is_file()
        assert (tmp_path / "out" / f"{name}.parquet").is_file()
    page = (tmp_path / "out" / "variants.html").read_text()
    assert "Features that track the DMS score" in page and "<svg" in page


def test_parse_and_dms_errors(tmp_path):
    v = parse_variant("l3g:A2R", SEQ)
    assert v.substitutions == ((2, "L", "G"), (1, "A", "R")) and v.sites == [2, 1]
    assert v.apply(SEQ)[:4] == "MRGW"
    with pytest.raises(InputError, match="residue 3 is L, not A"):
        parse_variant("A3G", SEQ)
    with pytest.raises(InputError, match="outside the sequence"):
        parse_variant("A999G", SEQ)
    with pytest.raises(InputError, match="not a substitution"):
        parse_variant("L3", SEQ)
    with pytest.raises(InputError, match="mutated twice"):
        parse_variant("L3G:L3A", SEQ)
    bad = tmp_path / "bad.tsv"
    bad.write_text("variant\tvalue\nL3G\t1\n")
    with pytest.raises(InputError, match="score column"):
        read_dms(bad, SEQ)
    bad.write_text("mutation\tscore\nL3G\t1\nQ3G\t2\n")
    with pytest.raises(InputError, match=r"line 3: residue 3 is L"):
        read_dms(bad, SEQ)
    ok = tmp_path / "ok.tsv"
    ok.write_text("mutation\tscore\nL3G\t1\nW4A\tNA\n")
    assert [x.name for x in read_dms(ok, SEQ)] == ["L3G"]
    with pytest.raises(InputError, match="no variants"):
        VariantsConfig(SEQ, sae=tmp_path)


def test_page_escapes_the_description(loaded, tiny_sae, tmp_path):
    fasta = tmp_path / "q.fasta"
    fasta.write_text(f">sp|P12345|X <img src=x onerror=alert(1)></script>\n{SEQ}\n")
    res = VariantScanner(
        VariantsConfig(str(fasta), sae=tiny_sae, mutations=["M5A"], out=tmp_path / "o"),
        loaded=loaded,
    ).run()
    page = (tmp_path / "o" / "variants.html").read_text()
    assert "<img" not in page and "&lt;img src=x" in page
    assert res.protein == "P12345" and "svg" in page and "M5A" in page


def test_cli(loaded, tiny_sae, tiny_esm_dir, tmp_path):
    app = typer.Typer(rich_markup_mode=None)
    app.command("variants")(build_command(VariantsConfig, variants.run, show_variants))
    app.command("other")(lambda: None)
    args = ["variants", SEQ, "--sae", str(tiny_sae), "--model", str(tiny_esm_dir)]
    res = CliRunner().invoke(app, [*args, "--mutations", "M5A,M5M"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    assert "M5A" in res.output and "M5M: no feature changes." in res.output
    res = CliRunner().invoke(app, [*args, "--mutations", "M5A", "--json"])
    assert json.loads(res.stdout)["variants"][0]["variant"] == "M5A"
    res = CliRunner().invoke(app, [*args, "--mutations", "K5A"])
    assert res.exit_code == 2 and "residue 5 is M" in res.output
