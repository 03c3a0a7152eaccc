"""Inline SVG plots for the atlas, written as strings (no matplotlib, no JavaScript needed).

Every function returns a :class:`markupsafe.Markup` string: numbers are formatted here and every
piece of text that comes from data (protein IDs, sequences, labels) goes through
:func:`markupsafe.escape`, so the SVG can be dropped into an autoescaped jinja2 template.
A residue track is drawn twice: an overview of the whole protein that fits the page width with the
peak marked, and a detail view of the residues around the peak; bars are one run-length encoded
step path, so a mostly silent 1,000-residue track costs a few hundred bytes. Sequence logos are
SVG text scaled to the letters' heights.
"""

from __future__ import annotations

import functools
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


#: colours of residue concept lanes drawn under a track (cycled)
LANE_COLOURS = ("#7b3294", "#1b7837", "#c2a5cf", "#a6611a", "#018571", "#d01c8b")
#: amino-acid colours of the sequence logo (WebLogo's "chemistry" scheme)
AA_COLOURS = {
    **dict.fromkeys("GSTYC", "#1b9e4b"),
    **dict.fromkeys("NQ", "#8e44ad"),
    **dict.fromkeys("KRH", "#2166ac"),
    **dict.fromkeys("DE", "#c0392b"),
    **dict.fromkeys("AVLIPWFM", "#1f2933"),
}
#: a concept lane: (label, [(start, end), ...] 0-based half-open)
Lane = tuple[str, Sequence[tuple[int, int]]]


def peak_of(values: np.ndarray) -> int | None:
    """0-based position of a track's highest value (the first one), None when it is all 0."""
    v = _values(values)
    if not v.size:
        return None
    i = int(np.argmax(v))
    return i if v[i] > 0 else None


def detail_window(length: int, peak: int | None, half: int = 30) -> tuple[int, int]:
    """``[start, end)`` of the ``2 * half + 1`` residues centred on the peak, moved inside the
    protein at its ends (the whole protein when it is shorter)."""
    size = min(length, 2 * half + 1)
    centre = peak if peak is not None else 0
    start = min(max(0, centre - half), length - size)
    return start, start + size


def _bins(v: np.ndarray, n_bins: int) -> np.ndarray:
    """Maximum of ``v`` in ``n_bins`` equal stretches (so a one-residue peak is never lost)."""
    edges = np.linspace(0, v.size, n_bins + 1).astype(np.int64)
    edges[-1] = v.size
    return np.maximum.reduceat(v, edges[:-1]) if v.size else np.zeros(0, np.float32)


def _step_path(heights: np.ndarray, base: float, unit: float, x0: float = 0.0) -> str:
    """A filled step path of bars ``unit`` wide from ``x0``, run-length encoded."""
    h = np.asarray(heights)
    if not h.size:
        return f"M{x0:.2f} {base:.1f}Z"
    starts = np.concatenate([[0], np.flatnonzero(np.diff(h)) + 1])
    widths = np.diff(np.concatenate([starts, [h.size]])) * unit
    tops = base - h[starts]
    steps = "".join(f"V{y:.0f}h{w:.2f}" for y, w in zip(tops.tolist(), widths.tolist()))
    return f"M{x0:.2f} {base:.1f}{steps}V{base:.1f}Z"


def _values(values: np.ndarray) -> np.ndarray:
    """A track as float32 with NaN as 0 (copied only when it has NaN)."""
    v = np.asarray(values, dtype=np.float32)
    return v if np.isfinite(v).all() else np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)


def _ticks(n: int, target: int = 8) -> list[int]:
    """Residue numbers (1-based) for an axis of ``n`` residues: 1 and round steps."""
    step = max(1, int(_nice_step(max(n, 1), target)))
    return [1, *[k for k in range(step, n + 1, step) if k - 1 > step / 3]]


def _interval_rect(
    cls: str,
    interval: tuple[int, int],
    window: tuple[int, int],
    x_of: float,
    band: tuple[float, float],
    fill: str,
    tip: str,
) -> str:
    """A residue interval ``[a, b)`` clipped to ``window`` as a rectangle over the vertical
    ``band`` (y, height), with a tooltip; '' when it lies outside."""
    lo, hi = window
    a, b = max(interval[0], lo), min(interval[1], hi)
    if b <= a:
        return ""
    return (
        f'<rect class="{cls}" x="{(a - lo) * x_of:.2f}" y="{band[0]:.1f}" '
        f'width="{max((b - a) * x_of, 1.0):.2f}" height="{band[1]}" fill="{fill}" '
        f'fill-opacity="{0.3 if cls == "span" else 1}"><title>{tip}</title></rect>'
    )


def _lanes_svg(lanes: Sequence[Lane], x_of: float, lo: int, hi: int, y0: float) -> list[str]:
    """Concept lanes: one thin row per concept, its instances inside ``[lo, hi)`` as bars."""
    out = []
    for k, (label, intervals) in enumerate(lanes):
        colour = LANE_COLOURS[k % len(LANE_COLOURS)]
        band = (y0 + 7 * k, 5.0)
        for a, b in intervals:
            tip = f"{escape(label)}: residues {max(a, lo) + 1}–{min(b, hi)}"
            out.append(_interval_rect("concept", (a, b), (lo, hi), x_of, band, colour, tip))
    return [r for r in out if r]


def overview_svg(
    values: np.ndarray,
    sequence: str | None = None,
    *,
    scale_max: float | None = None,
    spans: Sequence[tuple[int, int, int, float]] = (),
    lanes: Sequence[Lane] = (),
    window: tuple[int, int] | None = None,
    title: str = "",
    width: int = 1000,
    height: int = 40,
) -> Markup:
    """The whole protein in a fixed width: the activation (maximum per pixel column, so a
    single-residue peak stays visible), firing stretches shaded, the peak marked and named, the
    stretch the detail view shows outlined, and concept lanes below.

    The SVG scales to the width of its container (``viewBox``, no scrolling); the peak marker is
    ``<g class="peak" data-residue="N">`` (1-based), the protein ``data-length``.
    """
    v = _values(values)
    n = max(int(v.size), 1)
    seq = sequence if sequence is not None and len(sequence) == v.size else None
    top = float(scale_max) if scale_max else float(v.max(initial=0.0))
    top = top if top > 0 else 1.0
    x_of = width / n
    lanes_h = 7 * len(lanes)
    base, h = 14 + height, 14 + height + 4 + lanes_h + 14
    peak = peak_of(v)
    out = [
        f'<svg class="track overview" viewBox="0 0 {width} {h}" width="{width}" height="{h}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" data-length="{v.size}" '
        f'aria-label="activation along the whole protein">',
        *_title_and_spans(title, spans, x_of, (0, v.size), (14, height)),
    ]
    n_bins = min(v.size, width // 2)
    if n_bins:
        q = np.clip(np.rint(_bins(v, n_bins) / top * height), 0, height)
        out.append(f'<path d="{_step_path(q, base, width / n_bins)}" fill="{BAR}"/>')
    out.append(f'<path d="M0 {base + 0.5}H{width}" stroke="{AXIS}" stroke-width="0.7"/>')
    if window is not None and window != (0, v.size):
        a, b = window
        out.append(
            f'<rect class="window" x="{a * x_of:.2f}" y="12" width="{(b - a) * x_of:.2f}" '
            f'height="{height + 4}" fill="none" stroke="{AXIS}" stroke-dasharray="3 2">'
            f"<title>shown below: residues {a + 1}–{b}</title></rect>"
        )
    if peak is not None:
        out.append(_peak_marker(peak, v, seq, x_of, base, width))
    out += _lanes_svg(lanes, x_of, 0, v.size, base + 4)
    for k in _ticks(v.size):
        x = (k - 0.5) * x_of
        anchor = "start" if x < 12 else "end" if x > width - 12 else "middle"
        out.append(
            f'<path d="M{x:.1f} {base + 1}v3" stroke="{AXIS}"/><text class="tick" x="{x:.1f}" '
            f'y="{h - 2}" text-anchor="{anchor}">{k}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))


def _title_and_spans(
    title: str,
    spans: Sequence[tuple[int, int, int, float]],
    x_of: float,
    window: tuple[int, int],
    band: tuple[float, float],
) -> list[str]:
    """A track's tooltip title and its firing stretches (inside ``window``) shaded over the
    vertical ``band`` (y, height)."""
    out = [f"<title>{escape(title)}</title>"] if title else []
    for start, end, _, pv in spans:
        tip = f"residues {start + 1}–{end}, peak {fmt(pv)}"
        out.append(_interval_rect("span", (start, end), window, x_of, band, SPAN, tip))
    return [r for r in out if r]


def _peak_marker(
    peak: int, v: np.ndarray, seq: str | None, x_of: float, base: float, width: int
) -> str:
    x = (peak + 0.5) * x_of
    name = f"{seq[peak]}{peak + 1}" if seq else f"residue {peak + 1}"
    right = x < width - 140  # the label goes right of the mark, left of it near the end
    lx, anchor = (x + 7, "start") if right else (x - 7, "end")
    return (
        f'<g class="peak" data-residue="{peak + 1}"><path d="M{x:.2f} 10V{base}" stroke="#b91c1c" '
        f'stroke-width="1.2"/><path d="M{x - 4:.2f} 3h8l-4 6z" fill="#b91c1c"/>'
        f'<text class="peak-label" x="{lx:.1f}" y="10" text-anchor="{anchor}">peak '
        f"{escape(name)} ({fmt(float(v[peak]))})</text>"
        f"<title>peak at {escape(name)}: {fmt(float(v[peak]))}</title></g>"
    )


def detail_svg(
    values: np.ndarray,
    sequence: str | None = None,
    *,
    window: tuple[int, int],
    scale_max: float | None = None,
    spans: Sequence[tuple[int, int, int, float]] = (),
    lanes: Sequence[Lane] = (),
    title: str = "",
    cell: float = 14.0,
    height: int = 44,
) -> Markup:
    """Residues ``window = [start, end)`` one by one: a bar and a letter per residue, the peak
    residue highlighted, residue numbers every 10, concept lanes below."""
    v = _values(values)
    seq = sequence if sequence is not None and len(sequence) == v.size else None
    lo, hi = window
    part = v[lo:hi]
    top = float(scale_max) if scale_max else float(v.max(initial=0.0))
    top = top if top > 0 else 1.0
    w = (hi - lo) * cell
    seq_h = 16 if seq else 0
    lanes_h = 7 * len(lanes)
    base = height
    h = base + seq_h + 3 + lanes_h + 14
    peak = peak_of(v)
    out = [
        f'<svg class="track detail" viewBox="-4 0 {w + 8:.0f} {h}" width="{w + 8:.0f}" '
        f'height="{h}" role="img" data-start="{lo + 1}" data-end="{hi}" '
        f'aria-label="activation residue by residue around the peak">',
        *_title_and_spans(title, spans, cell, window, (0, base + seq_h)),
    ]
    if peak is not None and lo <= peak < hi:
        out.append(
            f'<rect class="peak-cell" x="{(peak - lo) * cell:.1f}" y="0" width="{cell:.1f}" '
            f'height="{base + seq_h}" fill="none" stroke="#b91c1c" stroke-width="1.2"/>'
        )
    q = np.clip(np.rint(part / top * height), 0, height)
    out.append(f'<path d="{_step_path(q, base, cell)}" fill="{BAR}"/>')
    out.append(f'<path d="M0 {base + 0.5}H{w:.0f}" stroke="{AXIS}" stroke-width="0.5"/>')
    if seq:
        # one x per letter (SVG applies the list character by character, tspans included)
        xs = _letter_xs(hi - lo, cell)
        if peak is not None and lo <= peak < hi:
            letters = (
                f'{escape(seq[lo:peak])}<tspan class="pk">{escape(seq[peak])}</tspan>'
                f"{escape(seq[peak + 1 : hi])}"
            )
        else:
            letters = str(escape(seq[lo:hi]))
        out.append(
            f'<text class="seq" x="{xs}" y="{base + 12}" text-anchor="middle">{letters}</text>'
        )
    out += _lanes_svg(lanes, cell, lo, hi, base + seq_h + 3)
    for k in range(lo + 1, hi + 1):
        if k % 10 == 0 or (k == lo + 1 and k % 10 < 7):
            out.append(
                f'<text class="tick" x="{(k - lo - 0.5) * cell:.1f}" y="{h - 2}" '
                f'text-anchor="middle">{k}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))


@functools.lru_cache(maxsize=64)
def _letter_xs(n: int, cell: float) -> str:
    """The x of each of ``n`` letters, centred in cells ``cell`` wide."""
    return " ".join(f"{(i + 0.5) * cell:g}" for i in range(n))


def logo_svg(
    windows: Sequence[str], flank: int, width_per_col: float = 28.0, height: int = 110
) -> Markup:
    """Sequence logo (information content in bits, letters stacked by frequency) of equal-length
    windows centred on activation peaks (``-`` = beyond a terminus, not counted). Column
    ``flank`` is the peak; positions are labelled relative to it."""
    cols = 2 * flank + 1
    ml, mb, mt = 34, 28, 6
    w = ml + cols * width_per_col + 6
    h = mt + height + mb
    out = [
        f'<svg class="plot logo" viewBox="0 0 {w:.0f} {h}" width="{w:.0f}" height="{h}" '
        f'role="img" aria-label="sequence logo of {len(windows)} windows around the peak">'
        f"<title>Sequence logo of {len(windows)} windows around the activation peak</title>"
    ]
    ymax = math.log2(20)
    for col in range(cols):
        letters = [s[col] for s in windows if col < len(s) and s[col] in AA_COLOURS]
        x = ml + col * width_per_col
        if letters:
            out.append(_logo_column(letters, col - flank, x, mt + height, width_per_col, height))
        label = "peak" if col == flank else f"{col - flank:+d}"
        out.append(
            f'<text class="tick" x="{x + width_per_col / 2:.1f}" y="{mt + height + 14}" '
            f'text-anchor="middle">{label}</text>'
        )
    out.append(
        f'<path d="M{ml - 3} {mt}V{mt + height}H{w - 4:.0f}" fill="none" stroke="{AXIS}"/>'
        f'<text class="tick" x="{ml - 6}" y="{mt + 8}" text-anchor="end">{ymax:.1f}</text>'
        f'<text class="tick" x="{ml - 6}" y="{mt + height}" text-anchor="end">0</text>'
        f'<text class="axis-label" transform="translate(11 {mt + height / 2}) rotate(-90)" '
        f'text-anchor="middle">bits</text></svg>'
    )
    return Markup("".join(out))


def _logo_column(
    letters: list[str], offset: int, x: float, base: float, col_w: float, height: float
) -> str:
    """One logo column: letters stacked by frequency, total height = information content (with
    the small-sample correction), the composition as the column's tooltip."""
    ymax = math.log2(20)
    counts = {a: letters.count(a) / len(letters) for a in set(letters)}
    entropy = -sum(p * math.log2(p) for p in counts.values())
    small = 19 / (2 * math.log(2) * len(letters))  # small-sample correction
    info = max(0.0, ymax - entropy - small)
    ranked = sorted(counts.items(), key=lambda t: (t[1], t[0]))
    tip = ", ".join(f"{a} {100 * p:.0f}%" for a, p in reversed(ranked))
    out = [f"<g><title>{offset:+d}: {tip} ({info:.2f} bits)</title>"]
    y = float(base)
    for a, p in ranked:
        lh = p * info / ymax * height
        if lh >= 1.0:
            out.append(
                f'<text class="logo-aa" transform="translate({x + 1:.1f} {y:.1f}) '
                f'scale({(col_w - 2) / 10:.2f} {lh / 10.2:.3f})" fill="{AA_COLOURS[a]}">{a}</text>'
            )
        y -= lh
    return "".join(out) + "</g>"


def peak_windows(tracks: Sequence[tuple[np.ndarray, str]], flank: int = 7) -> list[str]:
    """``2 * flank + 1`` residues around each track's peak (``-`` beyond a terminus), for
    :func:`logo_svg`; ``tracks`` = ``[(values, sequence)]`` with matching lengths."""
    out = []
    for values, seq in tracks:
        pk = peak_of(values)
        if pk is None or len(seq) != len(values):
            continue
        out.append(
            "".join(seq[i] if 0 <= i < len(seq) else "-" for i in range(pk - flank, pk + flank + 1))
        )
    return out


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
