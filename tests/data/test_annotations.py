import gzip
from pathlib import Path

import pytest

from plmsae._util import InputError
from plmsae.data.annotations import (
    parse_features,
    parse_location,
    parse_locations,
    read_annotations,
    sniff_format,
)
from plmsae.data.ontology import Ontology

FILES = Path(__file__).parent / "files"


@pytest.fixture(scope="module")
def mini_onto():
    return Ontology.load(FILES / "mini.obo")


def write(tmp_path, text, name="a.tsv"):
    p = tmp_path / name
    p.write_text(text)
    return p


# --- two-column TSV ---------------------------------------------------------------------------


def test_go_tsv_raw(tmp_path):
    p = write(tmp_path, "P1\tGO:0000013;GO:0000040\nP2\tGO:0000020\nP1\tGO:0000030\nP3\t\n")
    ann = read_annotations(p)
    assert ann.format == "go_tsv"
    assert ann.protein_concepts == {
        "GO": {"P1": {"GO:0000013", "GO:0000040", "GO:0000030"}, "P2": {"GO:0000020"}, "P3": set()}
    }


def test_go_tsv_with_ontology_maps_drops_propagates_splits(tmp_path, mini_onto, caplog):
    p = tmp_path / "a.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(
            "P1\tGO:0000099;GO:0000040;GO:0000005\nP2\tGO:0000020; GO:1234567\nP3\tGO:0000006\n"
        )
    ann = read_annotations(p, mini_onto)
    pc = ann.protein_concepts
    assert set(pc) == {"GO:BP", "GO:MF", "GO:CC"}
    assert pc["GO:BP"] == {
        "P1": {"GO:0000013", "GO:0000011", "GO:0000012", "GO:0000010", "GO:0008150"}
    }
    assert pc["GO:MF"] == {"P1": {"GO:0000040", "GO:0003674"}}
    assert pc["GO:CC"] == {"P2": {"GO:0000020", "GO:0000021", "GO:0005575"}}
    assert ann.counts["go_alt_ids_mapped"] == 1
    assert ann.counts["go_obsolete_or_unknown"] == 3
    assert "dropped 3 annotations to 3 obsolete or unknown GO terms" in caplog.text
    assert ann.concept_names["GO:0000021"] == "organelle F"
    assert "P3" not in ann.protein_ids()  # its only term is obsolete


@pytest.mark.parametrize(
    "text,line",
    [
        ("P1\tGO:0000013\nP2 GO:0000040\n", 2),
        ("P1\tGO:0000013\n\nP2\tGO:0000040\tX\n", 3),
        ("P1\tGO:0000013\nP2\tGO0000040\n", 2),
        ("P1\tGO:0000013\n\tGO:0000040\n", 2),
    ],
)
def test_go_tsv_malformed(tmp_path, text, line):
    with pytest.raises(InputError, match=rf"a\.tsv, line {line}: malformed line.*Fix: each line"):
        read_annotations(write(tmp_path, text))


# --- GAF ------------------------------------------------------------------------------------


def test_gaf_raw_skips_not_and_reads_names():
    ann = read_annotations(FILES / "mini.gaf")
    assert ann.format == "gaf"
    assert ann.protein_concepts["GO"] == {
        "P06493": {"GO:0004693", "GO:0005634", "GO:0000086"},
        "P68871": {"GO:0005344", "GO:0005833"},
        "P0A7V0": {"GO:0003735"},
    }
    assert ann.counts["gaf_not_qualifier"] == 1
    assert ann.protein_names["P68871"] == "Hemoglobin subunit beta"


def test_gaf_malformed_line(tmp_path):
    text = (
        (FILES / "mini.gaf")
        .read_text()
        .replace(
            "UniProtKB\tP68871\tHBB\tpart_of\tGO:0005833", "UniProtKB P68871 HBB part_of GO:0005833"
        )
    )
    with pytest.raises(InputError, match=r"line 9: malformed GAF line.*Fix:"):
        read_annotations(write(tmp_path, text, "x.gaf"))


# --- UniProt TSV ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uniprot():
    return read_annotations(FILES / "uniprot.tsv")


def test_uniprot_go_families_names_sequences(uniprot):
    assert uniprot.format == "uniprot_tsv"
    assert uniprot.protein_concepts["GO"]["P0A7V0"] == {"GO:0003735", "GO:0022627", "GO:0006412"}
    fam = uniprot.protein_concepts["family"]
    assert fam["P06493"] == {
        "family:Protein kinase superfamily",
        "family:Protein kinase superfamily, CMGC Ser/Thr protein kinase family",
        "family:Protein kinase superfamily, CMGC Ser/Thr protein kinase family, CDC2/CDKX subfamily",
    }
    assert fam["P68871"] == {"family:Globin family"}
    assert uniprot.concept_names["family:Globin family"] == "Globin family"
    assert uniprot.protein_names == {
        "P06493": "Cyclin-dependent kinase 1",
        "P32241": "Vasoactive intestinal polypeptide receptor 1",
        "P68871": "Hemoglobin subunit beta",
        "P0A7V0": "Small ribosomal subunit protein uS2",
    }
    assert len(uniprot.sequences["P06493"]) == 297
    assert uniprot.protein_organisms["P06493"] == "Homo sapiens (Human)"
    assert set(uniprot.protein_organisms) == set(uniprot.protein_names)


def test_uniprot_locations(uniprot):
    loc = uniprot.protein_concepts["location"]
    assert loc["P06493"] == {
        "location:Nucleus",
        "location:Cytoplasm",
        "location:Mitochondrion",
        "location:Cytoplasm, cytoskeleton",
        "location:Cytoplasm, cytoskeleton, microtubule organizing center",
        "location:Cytoplasm, cytoskeleton, microtubule organizing center, centrosome",
    }
    assert loc["P32241"] == {"location:Cell membrane"}
    assert loc["P0A7V0"] == {
        "location:Cytoplasm",
        "location:Cytoplasm, cytosol",
        "location:Secreted",
    }
    assert "P68871" not in loc


def test_parse_locations():
    text = (
        "SUBCELLULAR LOCATION: Cell membrane {ECO:0000269|PubMed:1}; Single-pass type I membrane "
        "protein {ECO:0000305}; Extracellular side. Endosome membrane; Peripheral membrane "
        "protein. Note=Moves to the nucleus. Binds the membrane. {ECO:1}.; SUBCELLULAR "
        "LOCATION: [Isoform 3]: Nucleus; GPI-anchor."
    )
    assert parse_locations(text) == ["Cell membrane", "Endosome membrane", "Nucleus"]
    assert parse_locations("") == []


def test_uniprot_residue_concepts(uniprot):
    rc = uniprot.residue_concepts
    assert rc["Binding site:ATP"]["P06493"] == [(9, 18), (32, 33), (80, 83)]
    assert rc["Active site"]["P06493"] == [(127, 128)]
    assert rc["Domain:Protein kinase"]["P06493"] == [(3, 287)]
    assert rc["Domain:Globin"]["P68871"] == [(2, 147)]
    assert rc["Binding site:heme b"]["P68871"] == [(63, 64), (92, 93)]
    assert rc["Modified residue:Phosphothreonine"] == {
        "P06493": [(13, 14), (160, 161)],
        "P68871": [(12, 13)],
    }
    assert rc["Modified residue:Phosphotyrosine"] == {"P06493": [(14, 15)]}
    tm = rc["Transmembrane"]["P32241"]
    assert len(tm) == 7 and tm[0] == (143, 168) and tm[-1] == (373, 394)
    assert rc["Signal peptide"]["P32241"] == [(0, 30)]
    # '?..40' (unknown start) dropped; '400..>457' kept up to 457; isoform-only domain skipped
    assert rc["Motif:C-terminal tail"]["P32241"] == [(399, 457)]
    assert "Motif:Unknown start" not in rc and "Domain:Isoform-only domain" not in rc
    assert uniprot.counts["features_uncertain"] == 1
    assert uniprot.counts["features_other_isoform"] == 1
    for concept in rc:
        assert uniprot.concept_names[concept] == concept


def test_parse_features_and_location():
    assert parse_features(
        'TRANSMEM 10..30; /note="Helical"; /evidence="ECO:1|P:2, ECO:3"; TRANSMEM 45..65;'
    ) == [
        ("TRANSMEM", "10..30", {"note": "Helical", "evidence": "ECO:1|P:2, ECO:3"}),
        ("TRANSMEM", "45..65", {}),
    ]
    assert parse_features('MOD_RES 5; /note="Phosphoserine; by PKA"') == [
        ("MOD_RES", "5", {"note": "Phosphoserine; by PKA"})
    ]
    assert parse_location("10..30") == (9, 30)
    assert parse_location("12") == (11, 12)
    assert parse_location("<1..50") == (0, 50)
    assert parse_location("?5..30") == (4, 30)
    assert (
        parse_location("?..30") is None
        and parse_location("10..?") is None
        and parse_location("?") is None
    )
    for bad in ("30..10", "0..5", "a..5", "10-30", ""):
        with pytest.raises(ValueError):
            parse_location(bad)
    for bad in ('/note="x"; DOMAIN 1..5', "DOMAIN 1 5 Protein kinase."):
        with pytest.raises(ValueError):
            parse_features(bad)


def test_domain_numbering_removed(tmp_path):
    p = write(
        tmp_path,
        'Entry\tDomain [FT]\nQ1\tDOMAIN 10..90; /note="PDZ 1"; DOMAIN 120..200; '
        '/note="PDZ 2"; DOMAIN 220..300\n',
    )
    rc = read_annotations(p).residue_concepts
    assert rc == {"Domain:PDZ": {"Q1": [(9, 90), (119, 200)]}, "Domain": {"Q1": [(219, 300)]}}


def _uniprot_with(tmp_path, column, value):
    header = (FILES / "uniprot.tsv").read_text().splitlines()[0].split("\t")
    row = ["" for _ in header]
    row[header.index("Entry")] = "Q9"
    row[header.index("Sequence")] = "M" * 50
    row[header.index(column)] = value
    return write(tmp_path, "\t".join(header) + "\n" + "\t".join(row) + "\n", "u.tsv")


@pytest.mark.parametrize(
    "column,value,match",
    [
        (
            "Transmembrane",
            "TRANSMEM 10 30 Helical.",
            r"line 2, entry Q9, column 'Transmembrane': malformed feature",
        ),
        (
            "Binding site",
            'BINDING 40..20; /ligand="ATP"',
            r"line 2, entry Q9, column 'Binding site': malformed BINDING location",
        ),
        (
            "Domain [FT]",
            'DOMAIN 10..60; /note="X"',
            r"DOMAIN 10..60 ends after the sequence \(50 residues\)",
        ),
    ],
)
def test_uniprot_malformed_features(tmp_path, column, value, match):
    with pytest.raises(InputError, match=match + ".*Fix:"):
        read_annotations(_uniprot_with(tmp_path, column, value))


def test_uniprot_wrong_field_count(tmp_path):
    p = write(tmp_path, "Entry\tProtein families\nQ1\tGlobin family\nQ2\tA\tB\n")
    with pytest.raises(
        InputError, match="line 3: row has 3 tab-separated fields, the header has 2"
    ):
        read_annotations(p)


# --- sniffing and general errors --------------------------------------------------------------


def test_sniff(tmp_path):
    assert sniff_format(FILES / "mini.gaf") == "gaf"
    assert sniff_format(FILES / "uniprot.tsv") == "uniprot_tsv"
    assert sniff_format(write(tmp_path, "\nP1\tGO:0000001;GO:0000002\n")) == "go_tsv"
    headerless_gaf = "\n".join(
        line for line in (FILES / "mini.gaf").read_text().splitlines() if not line.startswith("!")
    )
    assert sniff_format(write(tmp_path, headerless_gaf, "h.gaf")) == "gaf"


@pytest.mark.parametrize("text", [">P1\nMKT\n", "a,b,c\n1,2,3\n", "!gpa-version: 1.1\nx\n"])
def test_unknown_format(tmp_path, text):
    with pytest.raises(
        InputError, match=r"line 1: unknown annotation format.*Fix: pass a two-column TSV"
    ):
        read_annotations(write(tmp_path, text))


def test_empty_and_missing(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read_annotations(write(tmp_path, "\n\n"))
    with pytest.raises(InputError, match="not found"):
        read_annotations(tmp_path / "none.tsv")
    with pytest.raises(InputError, match="no annotations found"):
        read_annotations(write(tmp_path, "Entry\tProtein families\nQ1\t\n"))


@pytest.mark.slow
def test_uniprot_with_real_go(shared_data):
    go = Ontology.load(shared_data / "go-basic-2022-07-01.obo.gz")
    ann = read_annotations(FILES / "uniprot.tsv", go)
    # P32241's GO:0099999 does not exist; the rest propagate into the three namespaces
    assert ann.counts["go_obsolete_or_unknown"] == 1
    assert "GO:0016301" in ann.protein_concepts["GO:MF"]["P06493"]  # kinase activity
    assert "GO:0005737" in ann.protein_concepts["GO:CC"]["P06493"]  # cytoplasm
    assert "GO:0008150" in ann.protein_concepts["GO:BP"]["P0A7V0"]
    assert ann.protein_concepts["family"]["P68871"] == {"family:Globin family"}


def test_byte_order_mark_and_crlf(tmp_path):
    p = tmp_path / "bom.tsv"
    p.write_bytes("\ufeffEntry\tProtein families\r\nQ1\tGlobin family\r\n".encode("utf-8"))
    assert read_annotations(p).protein_concepts["family"] == {"Q1": {"family:Globin family"}}
