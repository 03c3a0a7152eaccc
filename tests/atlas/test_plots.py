"""SVG helpers: spans, tracks, histograms (pure functions, no browser)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from plmsae.atlas.plots import (
    active_spans,
    detail_svg,
    detail_window,
    fmt,
    format_spans,
    histogram_svg,
    logo_svg,
    overview_svg,
    peak_of,
    peak_windows,
    summary_svg,
)


def test_active_spans():
    v = np.zeros(30, np.float32)
    v[3:6] = [1.0, 4.0, 2.5]
    v[8] = 3.0  # gap of 2 residues after 5 -> merged with the first run
    v[20:22] = 2.2  # far away -> its own span
    assert active_spans(v) == [(4, 9, 4, 4.0), (20, 22, 20, 2.200000047683716)]
    assert active_spans(v, max_gap=0) == [
        (4, 6, 4, 4.0),
        (8, 9, 8, 3.0),
        (20, 22, 20, 2.200000047683716),
    ]
    assert active_spans(np.zeros(5)) == [] and active_spans(np.zeros(0)) == []
    assert (
        format_spans(active_spans(v), "ACDEFGHIKLMNPQRSTVWYACDEFGHIKL") == "5–9 (F5), 21–22 (A21)"
    )


def test_overview_fits_a_fixed_width_and_marks_the_peak():
    # a 1,500-residue protein that fires at one residue near its end
    v = np.zeros(1500, np.float32)
    v[1400] = 5.0
    v[100:110] = 1.0
    seq = "ACDEFGHIKLMNPQRSTVWY" * 75
    svg = str(overview_svg(v, seq, spans=active_spans(v), window=(1370, 1431), title="<b>x</b>"))
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("viewBox") == f"0 0 1000 {root.get('height')}" and "&lt;b&gt;" in svg
    peak = [e for e in root.iter() if e.get("class") == "peak"][0]
    assert peak.get("data-residue") == "1401"  # 1-based
    x = float(re.search(r"M([\d.]+) ", [e for e in peak if e.tag.endswith("path")][0].get("d"))[1])
    assert x == pytest.approx(1400.5 * 1000 / 1500, abs=0.01)  # inside the 1000-unit width
    assert f"peak {seq[1400]}1401 (5)" in svg
    # one bar per pixel column, each the maximum of its residues: the single-residue peak stays
    bars = [e for e in root.iter() if e.tag.endswith("path") and e.get("fill")][0].get("d")
    assert "V14" in bars  # drawn to full height (base 54 - 40)
    window = [e for e in root.iter() if e.get("class") == "window"][0]
    assert float(window.get("x")) == pytest.approx(1370 * 1000 / 1500, abs=0.01)
    assert peak_of(np.zeros(5)) is None and 'class="peak"' not in str(overview_svg(np.zeros(5)))


def test_detail_window_is_centred_on_the_peak_and_inside_the_protein():
    assert detail_window(1500, 1400) == (1370, 1431)
    assert detail_window(1500, 3) == (0, 61) and detail_window(1500, 1498) == (1439, 1500)
    assert detail_window(40, 20) == (0, 40) and detail_window(40, None) == (0, 40)


def test_detail_svg_letters_peak_and_lanes():
    v = np.array([0, 0, 1, 2, 5, 2, 0, 0], np.float32)
    seq = "MK<A&BCD"
    lanes = [("Binding site: <ATP>", [(3, 5)]), ("none here", [])]
    svg = str(detail_svg(v, seq, window=(0, 8), spans=active_spans(v), lanes=lanes))
    root = ET.fromstring(svg)
    text = [t for t in root.iter() if t.get("class") == "seq"][0]
    assert "".join(text.itertext()) == "MK<A&BCD"  # escaped in the markup
    assert text.get("x") == "7 21 35 49 63 77 91 105"  # one position per letter, 14 px apart
    pk = [t for t in text if t.get("class") == "pk"]
    assert [t.text for t in pk] == ["&"]  # residue 5 is the peak
    concepts = [e for e in root.iter() if e.get("class") == "concept"]
    assert len(concepts) == 1 and "Binding site: &lt;ATP&gt;: residues 4–5" in svg
    # a wrong-length sequence is not drawn (letters would sit under the wrong bars)
    assert 'class="seq"' not in str(detail_svg(v, "MKA", window=(0, 8)))


def test_sequence_logo_of_peak_windows():
    seqs = ["AAAKAAA", "CCCKCCC", "GGGKGGG", "TTTKTTT"]
    tracks = []
    for s in seqs:
        t = np.zeros(len(s), np.float32)
        t[3] = 1.0
        tracks.append((t, s))
    windows = peak_windows(tracks, flank=4)
    assert windows == ["-AAAKAAA-", "-CCCKCCC-", "-GGGKGGG-", "-TTTKTTT-"]
    svg = str(logo_svg(windows, 4))
    root = ET.fromstring(svg)
    letters = [e for e in root.iter() if e.get("class") == "logo-aa"]
    # the conserved K at the peak is one tall letter; varied columns carry no information
    assert [e.text for e in letters] == ["K"]
    scale_y = float(re.search(r"scale\([\d.]+ ([\d.]+)\)", letters[0].get("transform"))[1])
    assert scale_y * 10.2 == pytest.approx(
        (np.log2(20) - 19 / (2 * np.log(2) * 4)) / np.log2(20) * 110, rel=1e-3
    )
    assert ">peak<" in svg and ">-4<" in svg


def test_histogram_and_summary_svg():
    svg = str(histogram_svg(np.array([0.5, 1.0, 1.0, 3.0]), n_inactive=10, label="act <1>"))
    ET.fromstring(svg)
    assert "4 active proteins" in svg and "act &lt;1&gt;" in svg
    assert "never active" in str(histogram_svg(np.array([]), n_inactive=3))
    s = str(summary_svg([("GO <x>", {"sae": 10.0, "neuron": 2.0})], sources=("sae", "neuron")))
    ET.fromstring(s)
    assert "GO &lt;x&gt;" in s


def test_fmt():
    assert fmt(None) == "–" and fmt(float("nan")) == "–" and fmt(0) == "0"
    assert (
        fmt(12345) == "12,345"
        and fmt(1e-6) == "1.00e-06"
        and fmt(0.5) == "0.5"
        and fmt(0.123456) == "0.123"
    )


def test_metric_rows_prefer_evaluation():
    from plmsae.atlas.site import metric_rows

    rows = metric_rows({"train": {"fve": 0.8, "l0": 16.0, "note": "x"}, "evaluate": {"fve": 0.75}})
    assert [(r["name"], r["value"]) for r in rows] == [
        ("fraction of variance explained", 0.75),
        ("L0 (training)", 16.0),
    ]
    assert [r["value"] for r in metric_rows({"fve": 0.9, "dead_fraction": 0.01})] == [0.9, 0.01]
