"""Small inline SVG drawings of the apply pages (static, no script; every text escaped)."""

from __future__ import annotations

import numpy as np
from markupsafe import Markup, escape

from plmsae.atlas.plots import AXIS, BAR, fmt


def scatter_svg(
    x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str = "", size: int = 220
) -> Markup:
    """A scatter plot of ``y`` against ``x`` (e.g. a feature's change against the DMS score),
    with the axis ranges written at the ends of the axes."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    pad, w, h = 34, size, size

    def scale(v: np.ndarray, lo: float, hi: float, length: float) -> np.ndarray:
        return (v - lo) / (hi - lo if hi > lo else 1.0) * length

    x0, x1 = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
    y0, y1 = (float(y.min()), float(y.max())) if len(y) else (0.0, 1.0)
    px = pad + scale(x, x0, x1, w - pad - 6)
    py = h - pad - scale(y, y0, y1, h - pad - 6)
    out = [
        f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{escape(title or ylabel + " against " + xlabel)}">'
    ]
    if title:
        out.append(f"<title>{escape(title)}</title>")
    out.append(
        f'<path d="M{pad} 4V{h - pad}H{w - 4}" fill="none" stroke="{AXIS}" stroke-width="0.8"/>'
    )
    out.extend(
        f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2" fill="{BAR}" fill-opacity="0.55"/>'
        for a, b in zip(px, py)
    )
    for text, xx, yy, anchor in (
        (fmt(x0), pad, h - pad + 12, "start"),
        (fmt(x1), w - 4, h - pad + 12, "end"),
        (escape(xlabel), (w + pad) / 2, h - 6, "middle"),
        (fmt(y1), pad - 3, 12, "end"),
        (fmt(y0), pad - 3, h - pad, "end"),
    ):
        out.append(
            f'<text class="tick" x="{xx:.0f}" y="{yy:.0f}" text-anchor="{anchor}">{text}</text>'
        )
    out.append(
        f'<text class="axis-label" transform="translate(10 {(h - pad) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(ylabel)}</text>'
    )
    out.append("</svg>")
    return Markup("".join(out))
