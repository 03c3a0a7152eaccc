"""The feature atlas: ``report`` (a static HTML site of SAE features) and ``annotate`` (which
features fire on one protein).

- :mod:`~plmsae.atlas.model`: ``Atlas`` and ``load_atlas``, read from an ASSOC_DIR
- :mod:`~plmsae.atlas.tracks`: per-residue activation tracks (the SAE over the activation store)
- :mod:`~plmsae.atlas.site`: templates, links, page contexts, the atomic swap of a finished site
- :mod:`~plmsae.atlas.plots`: inline SVG (tracks, histograms, the comparison chart)
- :mod:`~plmsae.atlas.report`: ``ReportConfig``, the ``Reporter`` engine and ``report``
- :mod:`~plmsae.atlas.annotate`: ``AnnotateConfig``, the ``Annotator`` engine and ``annotate``
"""
