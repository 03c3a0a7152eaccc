"""plmsae annotate: reading the query (sequence on the command line or FASTA)."""

from __future__ import annotations

import pytest

from plmsae._util import InputError
from plmsae.atlas.annotate import read_query


def test_read_query_sequence():
    [p] = read_query("mktay iakqr\nqisfv*")
    assert p.id == "query" and p.sequence == "MKTAYIAKQRQISFV"


def test_read_query_fasta_file_and_text(tiny_fasta):
    ps = read_query(str(tiny_fasta))
    assert [p.id for p in ps][:2] == ["P00001", "P00002"]
    ps = read_query(">a first\nMKT\nAYI\n>b\nGGG\n")
    assert [(p.id, p.sequence) for p in ps] == [("a", "MKTAYI"), ("b", "GGG")]


def test_read_query_errors(tmp_path):
    with pytest.raises(InputError, match=r"letters ESM-2 does not read: J \(first at residue 3\)"):
        read_query("MKJT")
    with pytest.raises(InputError, match="neither a FASTA file nor a protein sequence"):
        read_query(str(tmp_path / "missing.fasta"))
    with pytest.raises(InputError, match="neither a FASTA file nor a protein sequence"):
        read_query("MK1T")
