import gzip
import logging
from pathlib import Path

import pytest

from plmsae._util import InputError
from plmsae.data.ontology import Ontology

MINI = Path(__file__).parent / "files" / "mini.obo"


@pytest.fixture(scope="module")
def onto():
    return Ontology.load(MINI)


def test_terms_names_namespaces(onto):
    assert len(onto) == 11
    assert onto.name("GO:0000040") == "kinase activity"
    assert onto.namespace("GO:0000020") == "cellular_component"
    assert onto.category("GO:0000013") == "GO:BP"
    assert onto.category("GO:0000040") == "GO:MF"
    assert onto.terms["GO:0000013"].definition == 'Has two parents, "B" and C.'


def test_obsolete_dropped_and_counted(onto, caplog):
    assert onto.n_obsolete == 2
    assert "GO:0000005" not in onto.terms and onto.primary("GO:0000005") is None
    with caplog.at_level(logging.INFO, logger="plmsae.data.ontology"):
        Ontology.load(MINI)
    assert "dropped 2 obsolete terms" in caplog.text


def test_alt_ids_map_to_primary(onto):
    assert onto.primary("GO:0000099") == "GO:0000013"
    assert onto.primary("GO:0000004") == "GO:0008150"
    assert onto.primary("GO:0000013") == "GO:0000013"
    assert onto.primary("GO:9999999") is None
    assert onto.name("GO:0000099") == onto.name("GO:0000013")
    assert "GO:0000099" in onto and "GO:0000005" not in onto


def test_ancestors_diamond_part_of_not_regulates(onto):
    bp = "GO:0008150"
    assert onto.ancestors("GO:0000013") == {
        "GO:0000013",
        "GO:0000011",
        "GO:0000012",
        "GO:0000010",
        bp,
    }
    assert onto.ancestors("GO:0000099") == onto.ancestors("GO:0000013")
    assert onto.ancestors("GO:0000020") == {"GO:0000020", "GO:0000021", "GO:0005575"}
    assert onto.ancestors("GO:0000030") == {"GO:0000030", bp}  # regulates is not followed
    assert onto.parents("GO:0000013") == ("GO:0000011", "GO:0000012")
    with pytest.raises(KeyError, match="obsolete"):
        onto.ancestors("GO:0000005")


def test_propagate(onto):
    got = onto.propagate(["GO:0000099", "GO:0000040", "GO:0000005", "GO:1234567"])
    assert got == {
        "GO:0000013",
        "GO:0000011",
        "GO:0000012",
        "GO:0000010",
        "GO:0008150",
        "GO:0000040",
        "GO:0003674",
    }
    assert onto.propagate([]) == set()


def test_gzip_by_content(tmp_path):
    p = tmp_path / "mini.obo.gz"
    p.write_bytes(gzip.compress(MINI.read_bytes()))
    assert len(Ontology.load(p)) == 11


def test_cycle_is_an_input_error(tmp_path):
    p = tmp_path / "cycle.obo"
    p.write_text(
        "format-version: 1.2\n\n[Term]\nid: X:1\nname: a\nnamespace: n\nis_a: X:2\n\n"
        "[Term]\nid: X:2\nname: b\nnamespace: n\nis_a: X:1\n"
    )
    with pytest.raises(InputError, match="cycle"):
        Ontology.load(p).ancestors("X:1")


def test_not_an_ontology(tmp_path):
    p = tmp_path / "x.obo"
    p.write_text(">P1\nMKT\n")
    with pytest.raises(InputError, match=r"x\.obo.*Fix:"):
        Ontology.load(p)
    with pytest.raises(InputError, match="not found"):
        Ontology.load(tmp_path / "missing.obo")


@pytest.mark.slow
def test_real_go_basic(shared_data):
    go = Ontology.load(shared_data / "go-basic-2022-07-01.obo.gz")
    assert 40_000 < len(go) < 50_000 and go.n_obsolete > 1000
    assert {go.namespace(t) for t in go.terms} == {
        "biological_process",
        "molecular_function",
        "cellular_component",
    }
    # GO:0019952 is an alt_id of GO:0000003 reproduction
    assert go.primary("GO:0019952") == "GO:0000003" and go.name("GO:0019952") == "reproduction"
    # protein kinase activity -> kinase activity -> catalytic activity -> molecular_function
    anc = go.ancestors("GO:0004672")
    assert {"GO:0016301", "GO:0003824", "GO:0003674"} <= anc
    # mitochondrial inner membrane is part_of mitochondrion
    assert "GO:0005739" in go.ancestors("GO:0005743")
    # every live term reaches exactly one namespace root
    roots = {"GO:0008150", "GO:0003674", "GO:0005575"}
    for t in list(go.terms)[::50]:
        assert len(go.ancestors(t) & roots) == 1
