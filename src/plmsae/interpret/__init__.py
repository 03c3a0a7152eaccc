"""Stage 5, explain: plain-English descriptions of features and their held-out scores.

:mod:`.explain` (config, engine, the ``explain`` function), :mod:`.selection` (which features and
proteins), :mod:`.explainers` (offline and LLM), :mod:`.explanations` (the output format).
"""
