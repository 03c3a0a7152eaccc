"""HTML pages of the apply stages, in the atlas style: the atlas's jinja environment (autoescape
on, so every value from the data is escaped) and stylesheet inlined, so a page opens from disk
and makes no request. Templates: ``atlas/templates/variants.html``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from plmsae.apply.variants import VariantScanner, VariantsResult

#: correlations listed per level, and scatter plots drawn, on the variants page
PAGE_CORRELATIONS = 15
PAGE_SCATTERS = 3


def render(template: str, **context: Any) -> str:
    """A page of the atlas environment with its stylesheet inlined and the footer stamp."""
    from markupsafe import Markup

    from plmsae.atlas import site as atlas_site

    return (
        atlas_site.environment()
        .get_template(template)
        .render(
            root="",
            **atlas_site.stamp(),
            inline_css=Markup((atlas_site.STATIC / "style.css").read_text()),
            **context,
        )
    )


def variants_page(scanner: VariantScanner, result: VariantsResult) -> str:
    """The variants page: the DMS correlations (with scatter plots of the strongest) and, per
    variant (the most changed first when there are many), its largest feature changes and the
    top feature's track on the wild type and the variant."""
    from plmsae.apply.variants import PAGE_VARIANTS

    table = result.variants
    order = list(range(len(table)))
    if len(order) > PAGE_VARIANTS:
        size = (table["l1_site"] + table["l1_pooled"]).to_numpy()
        order = sorted(np.argsort(-size, kind="stable")[:PAGE_VARIANTS].tolist())
    s = result.settings
    return render(
        "variants.html",
        title="plmsae variants",
        model_name=s["model"],
        layer=s["layer"],
        level="residue",
        ctx=s,
        protein=scanner.protein,
        n_variants=len(table),
        n_shown=len(order),
        variants=[_page_variant(scanner, result, i) for i in order],
        correlations=_page_correlations(scanner, result),
    )


def _page_variant(scanner: VariantScanner, result: VariantsResult, i: int) -> dict[str, Any]:
    from plmsae.atlas.plots import detail_svg, detail_window, overview_svg

    v = scanner.variants_[i]
    row = result.variants.iloc[i]
    starts = [*scanner.deltas_.starts, len(result.changes)]
    changes = result.changes.iloc[starts[i] : starts[i + 1]]
    track = scanner.deltas_.tracks[i]
    svgs = []
    if track is not None:
        f = int(row["top_feature"])
        wt = scanner.z_wt[:, f]
        top = float(max(wt.max(initial=0.0), track.max(initial=0.0))) or None
        seq = scanner.protein.sequence
        for name, values, letters in (("wild type", wt, seq), (v.name, track, v.apply(seq))):
            spans = [(p, p + 1, p, float(values[p])) for p in v.sites]
            title = f"feature {f} along {name}"
            window = detail_window(len(values), v.sites[0])  # centred on the (first) mutation
            overview = overview_svg(
                values, letters, window=window, scale_max=top, spans=spans, title=title
            )
            detail = detail_svg(values, letters, window=window, scale_max=top, spans=spans)
            svgs.append((name, overview + detail))
    return {
        "name": v.name,
        "score": v.score,
        "positions": row["positions"],
        "n_gained": int(row["n_gained"]),
        "n_lost": int(row["n_lost"]),
        "l1_site": float(row["l1_site"]),
        "l1_pooled": float(row["l1_pooled"]),
        "changes": changes.to_dict(orient="records"),
        "top_feature": int(row["top_feature"]),
        "tracks": svgs,
    }


def _page_correlations(scanner: VariantScanner, result: VariantsResult) -> dict[str, Any] | None:
    from plmsae.apply.plots import scatter_svg

    corr = result.correlations
    if corr is None:
        return None
    levels = {
        level: corr[corr["level"] == level].head(PAGE_CORRELATIONS).to_dict(orient="records")
        for level in ("site", "pooled")
    }
    scores = np.array([np.nan if v.score is None else v.score for v in scanner.variants_])
    deltas = {
        "site": sp.vstack(scanner.deltas_.site).tocsc(),
        "pooled": sp.vstack(scanner.deltas_.pooled).tocsc(),
    }
    plots = []
    for r in corr.dropna(subset=["rho"]).head(PAGE_SCATTERS).itertuples(index=False):
        x = np.asarray(deltas[r.level][:, int(r.feature)].toarray()).ravel()
        title = f"feature {r.feature} ({r.level}): rho = {r.rho:.2f}"
        plots.append(
            {
                "feature": int(r.feature),
                "level": r.level,
                "rho": float(r.rho),
                "label": r.label,
                "svg": scatter_svg(x, scores, f"change ({r.level})", "DMS score", title),
            }
        )
    n_scored = int(np.isfinite(scores).sum())
    return {"levels": levels, "plots": plots, "n_scored": n_scored, "n_tested": len(corr)}
