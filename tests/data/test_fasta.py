import gzip

import pytest

from plmsae._util import InputError
from plmsae.data.fasta import (
    ESM_RESIDUES,
    Protein,
    describe,
    iter_fasta,
    parse_header,
    read_fasta,
)


def write(tmp_path, text, name="x.fasta"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_reads_tiny_fasta_with_uniprot_ids(tiny_fasta, tiny_proteins):
    TINY_PROTEINS = tiny_proteins
    proteins = read_fasta(tiny_fasta)
    assert [p.id for p in proteins] == list(TINY_PROTEINS)
    assert [p.sequence for p in proteins] == list(TINY_PROTEINS.values())
    assert proteins[0].description == "TEST_0 test protein 0"
    assert len(proteins[0]) == len(TINY_PROTEINS["P00001"])


@pytest.mark.parametrize(
    "header,expected",
    [
        (
            "sp|P12345|NAME_HUMAN Some protein OS=Homo sapiens",
            ("P12345", "NAME_HUMAN Some protein OS=Homo sapiens"),
        ),
        (
            "tr|A0A024R161|A0A024R161_HUMAN Uncharacterized",
            ("A0A024R161", "A0A024R161_HUMAN Uncharacterized"),
        ),
        ("seq1  first  one", ("seq1", "first  one")),
        ("A0A183", ("A0A183", "")),
        ("P1\tdesc here ", ("P1", "desc here")),
        ("sp|P12345|", ("P12345", "")),
        ("gi|123|ref|NP_1| x", ("gi|123|ref|NP_1|", "x")),  # only sp/tr are UniProt headers
    ],
)
def test_parse_header(header, expected):
    assert parse_header(header) == expected


@pytest.mark.parametrize(
    "description,expected",
    [
        (
            "HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2",
            ("Hemoglobin subunit alpha", "Homo sapiens"),
        ),
        (
            "A0A024R161_HUMAN Uncharacterized protein OS=Homo sapiens (Human) OX=9606 PE=4 SV=1",
            ("Uncharacterized protein", "Homo sapiens (Human)"),
        ),
        (  # OS= ends at the next tag, however many words the organism has
            "RPOB_ECOLI DNA-directed RNA polymerase subunit beta OS=Escherichia coli (strain "
            "K12) OX=83333 GN=rpoB",
            ("DNA-directed RNA polymerase subunit beta", "Escherichia coli (strain K12)"),
        ),
        (
            "Cluster: Foo n=3 Tax=Homo sapiens TaxID=9606 RepID=X",
            ("Cluster: Foo n=3", "Homo sapiens"),
        ),
        ("my kinase, isoform 2", ("my kinase, isoform 2", "")),
        ("NAME_HUMAN", ("NAME_HUMAN", "")),  # only the entry name: better than nothing
        ("", ("", "")),
    ],
)
def test_describe_uniprot_descriptions(description, expected):
    assert describe(description) == expected


def test_protein_name_and_organism_from_a_uniprot_fasta(tmp_path):
    p = write(
        tmp_path,
        ">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 "
        "SV=2\nMVLSPADKTN\n>plain a plain name\nMK\n",
    )
    a, b = read_fasta(p)
    assert (a.id, a.name, a.organism) == ("P69905", "Hemoglobin subunit alpha", "Homo sapiens")
    assert (b.id, b.name, b.organism) == ("plain", "a plain name", "")


def test_multiline_gzip_lowercase_crlf_blank_lines_and_stop(tmp_path):
    p = tmp_path / "x.fa.gz"
    with gzip.open(p, "wt", newline="") as fh:
        fh.write(">a desc\r\nmkt\r\nAYX\r\n\r\n>b\nMBZUO*\n")
    proteins = read_fasta(p)
    assert proteins == [Protein("a", "MKTAYX", "desc"), Protein("b", "MBZUO", "")]


def test_gzip_detected_by_content_not_name(tmp_path):
    p = tmp_path / "plain_name.fasta"
    p.write_bytes(gzip.compress(b">a\nMK\n"))
    assert read_fasta(p) == [Protein("a", "MK", "")]


def test_iter_fasta_streams(tmp_path):
    p = write(tmp_path, ">a\nMK\n>b\nML\n")
    it = iter_fasta(p)
    assert next(it).id == "a"
    assert next(it).id == "b"
    with pytest.raises(StopIteration):
        next(it)


def test_all_esm_residues_accepted(tmp_path):
    p = write(tmp_path, f">a\n{ESM_RESIDUES.lower()}\n")
    assert read_fasta(p)[0].sequence == ESM_RESIDUES


def test_duplicate_id(tmp_path):
    p = write(tmp_path, ">sp|P1|A_HUMAN\nMK\n>P2\nMK\n>P1 again\nMK\n")
    with pytest.raises(InputError) as e:
        read_fasta(p)
    msg = str(e.value)
    assert (
        str(p) in msg and "line 5" in msg and "P1" in msg and "duplicate" in msg and "Fix:" in msg
    )


def test_empty_sequence(tmp_path):
    p = write(tmp_path, ">a\nMK\n>b empty\n\n>c\nMK\n")
    with pytest.raises(InputError, match=r"line 3, record b: empty sequence.*Fix:"):
        read_fasta(p)


def test_only_stop_is_empty(tmp_path):
    with pytest.raises(InputError, match="empty sequence"):
        read_fasta(write(tmp_path, ">a\n*\n"))


@pytest.mark.parametrize(
    "seq,char,line",
    [
        ("MKT\nAJK", "J", 3),
        ("MK*T", "*", 2),
        ("MK-T", "-", 2),
        ("MK\n\nLL1", "1", 4),
        ("MK T\nA#", "#", 3),
    ],
)
def test_bad_character_names_line_record_and_fix(tmp_path, seq, char, line):
    p = write(tmp_path, f">ok\nMK\n>bad\n{seq}\n".replace(">ok\nMK\n", ""))
    with pytest.raises(InputError) as e:
        read_fasta(p)
    msg = str(e.value)
    assert f"line {line}, record bad" in msg and repr(char) in msg and "Fix:" in msg


def test_sequence_before_header(tmp_path):
    with pytest.raises(InputError, match="line 1.*before the first"):
        read_fasta(write(tmp_path, "MKT\n>a\nMK\n"))


def test_header_without_id(tmp_path):
    with pytest.raises(InputError, match="line 1.*without an ID"):
        read_fasta(write(tmp_path, ">\nMK\n"))


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no FASTA records"):
        read_fasta(write(tmp_path, "\n"))
    with pytest.raises(InputError, match="not found"):
        read_fasta(tmp_path / "nope.fasta")


def test_truncated_gzip(tmp_path):
    p = tmp_path / "t.fasta.gz"
    p.write_bytes(gzip.compress(b">a\nMKT\n" * 2000)[:-40])
    with pytest.raises(InputError, match="damaged or truncated"):
        read_fasta(p)


def test_shared_swissprot_head(shared_data):
    """The first records of the real Swiss-Prot 2014 file parse (streaming, no full read)."""
    it = iter_fasta(shared_data / "swissprot2014.fasta.gz")
    first = [next(it) for _ in range(200)]
    assert first[0].id == "A0A183" and first[0].sequence.startswith("MSQQKQQSWKPP")
    assert all(p.sequence and set(p.sequence) <= set(ESM_RESIDUES) for p in first)


def test_blocks_boundaries_give_same_records_and_line_numbers(tmp_path, monkeypatch):
    """Records that straddle the read blocks are reassembled; line numbers stay exact."""
    import plmsae.data.fasta as fasta

    text = "\n\n" + "".join(
        f">p{i} d{i}\n{'MKTAYIAKQR' * (i % 7 + 1)}\n{'LL' * i}\n" for i in range(300)
    )
    p = write(tmp_path, text)
    expected = read_fasta(p)
    monkeypatch.setattr(fasta, "_BLOCK_CHARS", 37)
    assert read_fasta(p) == expected
    assert expected[5] == Protein("p5", "MKTAYIAKQR" * 6 + "LL" * 5, "d5")
    bad = text.replace(">p200 d200\n", ">p200 d200\nMK\nMJ\n")
    with pytest.raises(InputError, match=r"line 605, record p200.*'J' at residue 4"):
        read_fasta(write(tmp_path, bad, "bad.fasta"))


def test_spaces_inside_sequence_lines_are_ignored(tmp_path):
    assert read_fasta(write(tmp_path, ">a\nMKT AYI\tAK\n"))[0].sequence == "MKTAYIAK"


def test_sequence_before_header_after_blank_lines(tmp_path):
    with pytest.raises(InputError, match="line 3.*before the first"):
        read_fasta(write(tmp_path, "\n\nMKT\n>a\nMK\n"))


def test_last_record_without_newline(tmp_path):
    assert read_fasta(write(tmp_path, ">a\nMK\n>b\nLL"))[1] == Protein("b", "LL", "")


def test_non_ascii_residue(tmp_path):
    with pytest.raises(InputError, match=r"line 2, record a.*'é' at residue 3"):
        read_fasta(write(tmp_path, ">a\nMKé\n"))
