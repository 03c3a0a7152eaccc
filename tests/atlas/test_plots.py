"""SVG helpers: spans, tracks, histograms (pure functions, no browser)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from plmsae.atlas.plots import (
    active_spans,
    fmt,
    format_spans,
    histogram_svg,
    summary_svg,
    track_svg,
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


def test_track_svg_is_valid_and_escaped():
    v = np.array([0, 0, 1, 2, 2, 2, 0, 0], np.float32)
    svg = str(track_svg(v, "MK<A&BCD", spans=active_spans(v), title="<b>x</b>"))
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag.endswith("svg")
    assert "MK&lt;A&amp;BCD" in svg and "&lt;b&gt;" in svg
    path = [e for e in root.iter() if e.tag.endswith("path") and "scale" in e.get("transform", "")][
        0
    ]
    assert path.get("d") == "M0 44V44h2V22h1V0h3V44h2V44Z"  # run-length encoded steps
    # a wrong-length sequence is not drawn (letters would sit under the wrong bars)
    assert "MKA" not in str(track_svg(v, "MKA"))


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
