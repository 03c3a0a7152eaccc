"""Structures: reading (PDB, mmCIF, gzip, CHARMM names), alignment to the embedded sequence
(Biopython PairwiseAligner: offsets, mismatches and gaps reported), file lookup by accession, and
AlphaFold DB downloads against a local HTTP server (cache, 404, retries, offline message)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from adk import ADK, ADK_PDB

from plmsae._util import InputError
from plmsae.atlas import structure as S


def test_reads_the_charmm_file_and_places_every_residue():
    (chain,) = S.read_chains(ADK_PDB)
    assert chain.sequence == ADK  # HSD/HSE histidines read as H
    m = S.load_aligned(ADK_PDB, "P69441", ADK)
    assert m.alignment.n_identical == 214 and not m.alignment.mismatches
    assert list(m.alignment.mapping) == list(range(214))
    text = m.text.splitlines()
    assert all(line[17:20] != "HSD" for line in text) and not any(
        line[76:78].strip() == "H" for line in text
    )
    assert text[1][12:16] == " CA " and text[1][76:78] == " C"  # C-alpha is carbon, not calcium


def test_alignment_reports_offsets_mismatches_and_gaps():
    # the embedded sequence: residues 11..214 with one substitution and 4 extra residues
    seq = ADK[10:100] + "W" + ADK[101:150] + "WWWW" + ADK[150:]
    a = S.align(seq, ADK)
    assert a.mapping[0] == 10  # shifted, not silently numbered from 1
    assert a.mismatches == [(91, "W", ADK[100])]
    assert a.n_sequence_only == 4 and a.n_structure_only == 10
    k = seq.index("WWWW")
    assert list(a.mapping[k : k + 4]) == [-1] * 4 and a.mapping[k + 4] == 150
    m = S.load_aligned(ADK_PDB, "X", seq)
    note = m.note()
    assert "1 differ from the sequence (W91" in note and "4 sequence residues have no" in note
    track = np.zeros(len(seq), np.float32)
    track[k + 4] = 5.0
    vals = m.values(track)
    assert len(vals) == 214 and vals[150] == 5.0 and vals[0] is None and vals[10] == 0.0


def test_mmcif_and_file_lookup(tmp_path):
    import gzip
    import io

    from Bio.PDB import MMCIFIO, PDBParser

    st = PDBParser(QUIET=True).get_structure(
        "x", io.StringIO(gzip.decompress(ADK_PDB.read_bytes()).decode())
    )
    io_ = MMCIFIO()
    io_.set_structure(st)
    io_.save(str(tmp_path / "AF-P69441-F1-model_v4.cif"))
    (tmp_path / "notes.txt").write_text("x")
    found = S.find_structure_file(tmp_path, "p69441")
    assert found == tmp_path / "AF-P69441-F1-model_v4.cif"
    (chain,) = S.read_chains(found)
    assert chain.sequence == ADK
    (tmp_path / "P69441.pdb.gz").write_bytes(ADK_PDB.read_bytes())
    assert S.find_structure_file(tmp_path, "P69441") == tmp_path / "P69441.pdb.gz"  # exact first
    assert S.find_structure_file(tmp_path, "Q00000") is None
    assert S.find_structure_file(tmp_path, "../etc") is None
    (tmp_path / "bad.pdb").write_text("HELLO\n")
    with pytest.raises(InputError, match="not a readable PDB/mmCIF file"):
        S.read_chains(tmp_path / "bad.pdb")
    water = "HETATM    1  O   HOH W   1       1.000   2.000   3.000  1.00  0.00           O\n"
    (tmp_path / "water.pdb").write_text(water + "END\n")
    with pytest.raises(InputError, match="no protein chain"):
        S.read_chains(tmp_path / "water.pdb")


class FakeAFDB:
    """A local stand-in for AlphaFold DB: /api/prediction/ACC and /files/AF-ACC.pdb; ``fail``
    answers 503 that many times first."""

    def __init__(self):
        self.hits: list[str] = []
        self.fail = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_error(503)
                    return
                if self.path == "/api/prediction/P69441":
                    body = json.dumps([{"pdbUrl": f"{outer.url}/files/AF-P69441.pdb"}]).encode()
                elif self.path == "/files/AF-P69441.pdb":
                    import gzip

                    body = gzip.decompress(ADK_PDB.read_bytes())
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def afdb():
    srv = FakeAFDB()
    yield srv
    srv.close()


def test_alphafold_download_cache_404_and_retries(afdb, tmp_path):
    client = S.AlphaFoldClient(tmp_path / "cache", base_url=afdb.url, timeout=5, retry_delay=0.01)
    p = client.get("P69441")
    assert p == tmp_path / "cache" / "AF-P69441.pdb" and S.read_chains(p)[0].sequence == ADK
    n = len(afdb.hits)
    assert client.get("P69441") == p and len(afdb.hits) == n  # cached: no request
    assert client.get("Q9Y6K9") is None  # 404: remembered
    assert (tmp_path / "cache" / "AF-Q9Y6K9.missing").exists()
    n = len(afdb.hits)
    assert client.get("Q9Y6K9") is None and len(afdb.hits) == n
    assert client.get("not an accession") is None and len(afdb.hits) == n
    # two 503s, then the answer: retried
    (tmp_path / "cache" / "AF-P69441.pdb").unlink()
    afdb.fail = 2
    assert client.get("P69441") == p
    # always 503: gives up after retries + 1 tries with a clear message
    (tmp_path / "cache" / "AF-P69441.pdb").unlink()
    afdb.fail, n = 100, len(afdb.hits)
    with pytest.raises(S.StructureUnavailable, match="could not be reached after 3 tries"):
        client.get("P69441")
    assert len(afdb.hits) - n == 3


def test_offline_source_says_so_once(tmp_path, monkeypatch):
    calls = []

    def opener(req, timeout):
        calls.append((req.full_url, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(S, "AFDB_URL", "http://afdb.invalid")
    source = S.structure_source(None, True, tmp_path / "cache", timeout=3.0)
    assert source.client is not None
    source.client.opener, source.client.retry_delay = opener, 0.0
    pages = S.PageStructures(source)
    pages.prepare({"P69441": ADK, "P12345": "MKV"}, ["P69441", "P12345"])
    assert pages.models == {} and len(calls) == 3 and calls[0][1] == 3.0
    assert "Network is unreachable" in pages.note and "--structures" in pages.note
    assert (
        calls[0][0] == "http://afdb.invalid/api/prediction/P69441"
    )  # the second protein: not tried


def test_report_with_fetch_and_no_tracks_fetches_nothing(tmp_path, monkeypatch):
    """--fetch-structures without a network: the atlas is written; feature pages say why there
    is no structure."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import make_assoc_dir

    from plmsae.atlas.report import report

    monkeypatch.setattr(S, "AFDB_URL", "http://127.0.0.1:9")  # discard port: refused
    assoc = make_assoc_dir(tmp_path / "assoc", n_proteins=12, n_features=6)
    res = report(
        assoc,
        out=tmp_path / "site",
        tracks=False,
        fetch_structures=True,
        structure_cache=tmp_path / "cache",
    )
    assert res.n_pages > 0
    site_json = json.loads((tmp_path / "site" / "site.json").read_text())
    assert site_json["structures"]["n_structures"] == 0
