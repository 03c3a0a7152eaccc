"""Inline SVG plots for the atlas, written as strings (no matplotlib, no JavaScript needed).

Every function returns a :class:`markupsafe.Markup` string: numbers are formatted here and every
piece of text that comes from data (protein IDs, sequences, labels) goes through
:func:`markupsafe.escape`, so the SVG can be dropped into an autoescaped jinja2 template.
Tracks are drawn as one step path in residue units (``transform=scale``) with run-length encoding
of equal heights, so a mostly silent 1,000-residue track costs a few hundred bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from markupsafe import Markup, escape

BAR = "#2a6f97"
SPAN = "#f4a259"
AXIS = "#6b7280"
SOURCE_COLOURS = {"sae": "#2a6f97", "neuron": "#9c6644", "random": "#9ca3af"}


def fmt(x: float | None, digits: int = 3) -> str:
    """Short human number: 0.00123 -> 1.23e-03, 12345 -> 12,345, 0.5 -> 0.5."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e9:
        return f"{int(x):,}"
    if abs(x) < 10 ** -(digits - 1) or abs(x) >= 1e6:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def active_spans(
    values: np.ndarray, frac: float = 0.5, max_gap: int = 2
) -> list[tuple[int, int, int, float]]:
    """Stretches of residues where a feature fires.

    values: [L] activations of one feature along one protein. A residue is in a span when its
    activation is >= ``frac`` * the protein's maximum (and > 0); runs separated by at most
    ``max_gap`` residues are merged. Returns ``(start, end, peak, peak_value)`` with 0-based
    half-open ``[start, end)`` and the 0-based position of the peak.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return []
    top = float(values.max())
    if top <= 0:
        return []
    on = np.flatnonzero(values >= frac * top)
    spans: list[tuple[int, int, int, float]] = []
    start = prev = int(on[0])
    for i in map(int, on[1:]):
        if i - prev > max_gap + 1:
            spans.append(_span(values, start, prev + 1))
            start = i
        prev = i
    spans.append(_span(values, start, prev + 1))
    return spans


def _span(values: np.ndarray, start: int, end: int) -> tuple[int, int, int, float]:
    peak = start + int(np.argmax(values[start:end]))
    return start, end, peak, float(values[peak])


def format_spans(
    spans: Sequence[tuple[int, int, int, float]], sequence: str | None = None, limit: int = 6
) -> str:
    """'12–25 (K18), 80–84' with 1-based inclusive residue numbers, as biologists count."""
    parts = []
    for start, end, peak, _ in spans[:limit]:
        where = f"{start + 1}" if end - start == 1 else f"{start + 1}–{end}"
        if sequence and peak < len(sequence):
            where += f" ({sequence[peak]}{peak + 1})"
        parts.append(where)
    if len(spans) > limit:
        parts.append(f"+{len(spans) - limit} more")
    return ", ".join(parts)


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / max(n, 1)
    if raw <= 0:
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def histogram_svg(
    active_values: np.ndarray,
    n_inactive: int,
    bins: int = 40,
    width: int = 640,
    height: int = 220,
    label: str = "activation",
) -> Markup:
    """Histogram of a feature's per-protein activation over the proteins where it is active.

    active_values: [n_active] activations > 0. The y axis is logarithmic (counts of 1, 10, 100 ...)
    so that the rare strong activations, which define the feature, stay visible; the number of
    proteins where it is silent is written in the caption rather than drawn as a giant zero bar.
    """
    vals = np.asarray(active_values, dtype=np.float64)
    ml, mr, mt, mb = 48, 12, 12, 40
    pw, ph = width - ml - mr, height - mt - mb
    out = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Histogram of {escape(label)}"><title>Histogram of '
        f"{escape(label)} over {len(vals):,} active proteins ({n_inactive:,} inactive not shown)</title>"
    ]
    if vals.size == 0:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="{AXIS}">'
            "never active</text></svg>"
        )
        return Markup("".join(out))
    hi = float(vals.max())
    hi = hi if hi > 0 else 1.0
    counts, edges = np.histogram(vals, bins=bins, range=(0.0, hi))
    top = max(1, int(counts.max()))
    ldec = math.ceil(math.log10(top + 1)) or 1

    def y(c: float) -> float:
        return mt + ph - ph * math.log10(c + 1) / ldec

    bw = pw / bins
    for i, c in enumerate(counts):
        if c:
            yy = y(c)
            out.append(
                f'<rect x="{ml + i * bw:.1f}" y="{yy:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                f'height="{mt + ph - yy:.1f}" fill="{BAR}"><title>{fmt(edges[i])}–{fmt(edges[i + 1])}: '
                f"{int(c):,} proteins</title></rect>"
            )
    # axes
    out.append(f'<path d="M{ml} {mt}V{mt + ph}H{ml + pw}" fill="none" stroke="{AXIS}"/>')
    for d in range(ldec + 1):
        c = 10**d
        if c > 10**ldec:
            break
        yy = y(c - 1) if d == 0 else y(c)
        tick = 0 if d == 0 else c
        out.append(
            f'<path d="M{ml - 4} {yy:.1f}h4" stroke="{AXIS}"/><text x="{ml - 6}" y="{yy + 4:.1f}" '
            f'text-anchor="end" class="tick">{fmt(tick)}</text>'
        )
    step = _nice_step(hi)
    t = 0.0
    while t <= hi * 1.0001:
        xx = ml + pw * t / hi
        out.append(
            f'<path d="M{xx:.1f} {mt + ph}v4" stroke="{AXIS}"/><text x="{xx:.1f}" y="{mt + ph + 16}" '
            f'text-anchor="middle" class="tick">{fmt(t)}</text>'
        )
        t += step
    out.append(
        f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle" class="axis-label">'
        f"{escape(label)}</text>"
    )
    out.append(
        f'<text transform="translate(12 {mt + ph / 2}) rotate(-90)" text-anchor="middle" '
        f'class="axis-label">proteins (log scale)</text></svg>'
    )
    return Markup("".join(out))


def track_svg(
    values: np.ndarray,
    sequence: str | None,
    scale_max: float | None = None,
    spans: Sequence[tuple[int, int, int, float]] | None = None,
    cell: float = 8.0,
    height: int = 44,
    title: str = "",
) -> Markup:
    """Per-residue activation of one feature drawn over the protein sequence.

    values: [L] activations along the protein (row j = residue j, 0-based). sequence: the L
    residues as letters, or None when unknown (positions only). scale_max: the activation drawn
    full height (use one value for all tracks of a page so they compare). spans: highlighted
    stretches from :func:`active_spans`, each with a tooltip. The drawing is ``cell`` px per residue
    and scrolls horizontally inside its container.
    """
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    n = int(v.size)
    if sequence is not None and len(sequence) != n:
        sequence = None  # a length mismatch would misplace letters; draw positions only
    top = float(scale_max) if scale_max else float(v.max(initial=0.0))
    top = top if top > 0 else 1.0
    seq_h = 16 if sequence else 0
    axis_h = 14
    w = max(n * cell, 1.0)
    h = height + seq_h + axis_h
    pad_l, pad_r = 6, 14  # room for the first and last residue numbers
    out = [
        f'<svg class="track" viewBox="{-pad_l} 0 {w + pad_l + pad_r:.0f} {h}" width="{w + pad_l + pad_r:.0f}" '
        f'height="{h}" role="img" aria-label="per-residue activation track">'
    ]
    if title:
        out.append(f"<title>{escape(title)}</title>")
    base = height
    # highlighted spans behind the bars and letters
    for start, end, peak, pv in spans or ():
        where = f"residues {start + 1}–{end}" if end - start > 1 else f"residue {start + 1}"
        peak_res = f"{sequence[peak]}{peak + 1}" if sequence else f"{peak + 1}"
        out.append(
            f'<rect class="span" x="{start * cell:.1f}" y="0" width="{(end - start) * cell:.1f}" '
            f'height="{height + seq_h}" fill="{SPAN}" fill-opacity="0.28"><title>{where}, peak '
            f"{fmt(pv)} at {escape(peak_res)}</title></rect>"
        )
    # one step path in residue units, heights quantised to whole pixels and run-length encoded
    q = np.clip(np.rint(v / top * height), 0, height).astype(np.int32)
    ys = base - q
    d = [f"M0 {base}"]
    i = 0
    while i < n:
        j = i + 1
        while j < n and ys[j] == ys[i]:
            j += 1
        d.append(f"V{ys[i]}h{j - i}")
        i = j
    d.append(f"V{base}Z")
    out.append(f'<path transform="scale({cell:g} 1)" d="{"".join(d)}" fill="{BAR}"/>')
    out.append(f'<path d="M0 {base + 0.5}H{w:.0f}" stroke="{AXIS}" stroke-width="0.5"/>')
    if sequence:
        out.append(
            f'<text class="seq" x="0" y="{base + 12}" textLength="{w:.0f}" lengthAdjust="spacing">'
            f"{escape(sequence)}</text>"
        )
    # residue numbers every 10 (labels every 50, or 10 for short proteins)
    every = 10 if n <= 60 else 50
    ticks = [f"M{(k - 0.5) * cell:.1f} {base + seq_h}v3" for k in range(10, n + 1, 10)]
    out.append(f'<path d="{"".join(ticks)}" stroke="{AXIS}" stroke-width="0.7"/>')
    for k in [1, *range(every, n + 1, every)]:
        out.append(
            f'<text class="tick" x="{(k - 0.5) * cell:.1f}" y="{h - 1}" text-anchor="middle">{k}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def summary_svg(
    rows: list[tuple[str, dict[str, float]]],
    sources: Sequence[str] = ("sae", "neuron", "random"),
    names: dict[str, str] | None = None,
    width: int = 640,
) -> Markup:
    """Grouped horizontal bars: per category, the percentage of features associated, per source.

    rows: ``[(category, {source: percent})]``.
    """
    names = names or {}
    bar_h, gap, ml, mr = 12, 10, 150, 60
    group_h = bar_h * len(sources) + gap
    height = 24 + group_h * len(rows) + 28
    pw = width - ml - mr
    top = max([p for _, d in rows for p in d.values()] + [1.0])
    out = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Percentage of features associated, by category"><title>Percentage of features '
        f"associated with at least one concept, per category</title>"
    ]
    x = ml
    for s in sources:  # legend
        out.append(
            f'<rect x="{x}" y="4" width="12" height="12" fill="{SOURCE_COLOURS.get(s, BAR)}"/>'
            f'<text x="{x + 16}" y="14" class="tick">{escape(names.get(s, s))}</text>'
        )
        x += 24 + 8 * len(names.get(s, s))
    for g, (cat, d) in enumerate(rows):
        y0 = 24 + g * group_h
        out.append(
            f'<text x="{ml - 8}" y="{y0 + group_h / 2}" text-anchor="end" class="axis-label">'
            f"{escape(cat)}</text>"
        )
        for k, s in enumerate(sources):
            p = float(d.get(s, 0.0))
            bw = pw * p / top
            y = y0 + k * bar_h
            out.append(
                f'<rect x="{ml}" y="{y}" width="{bw:.1f}" height="{bar_h - 2}" '
                f'fill="{SOURCE_COLOURS.get(s, BAR)}"><title>{escape(names.get(s, s))}, '
                f'{escape(cat)}: {p:.1f}%</title></rect><text x="{ml + bw + 4:.1f}" y="{y + bar_h - 3}" '
                f'class="tick">{p:.1f}%</text>'
            )
    yb = 24 + group_h * len(rows)
    out.append(f'<path d="M{ml} 20V{yb}" stroke="{AXIS}"/>')
    out.append(
        f'<text x="{ml + pw / 2}" y="{yb + 20}" text-anchor="middle" class="axis-label">'
        "% of features associated (q &lt; 0.05, precision ≥ 0.5)</text></svg>"
    )
    return Markup("".join(out))
