"""concept_coverage: distinct concepts per source, and the size-matched count for the SAE."""

import pandas as pd
import pytest

from plmsae.analysis.associate import concept_coverage


def _assoc(rows):
    return pd.DataFrame(
        rows, columns=["source", "feature", "concept", "q_value", "precision", "f1"]
    )


def test_counts_distinct_associated_concepts_per_source():
    table = _assoc(
        [
            # SAE: features 0 and 1 both hit GO:1 (one concept), 2 hits GO:2, 3 is not significant
            ("sae", 0, "GO:1", 0.01, 0.9, 0.8),
            ("sae", 1, "GO:1", 0.001, 0.6, 0.4),
            ("sae", 2, "GO:2", 0.04, 0.5, 0.2),
            ("sae", 3, "GO:3", 0.2, 0.9, 0.6),
            # neurons: one significant but imprecise (not associated), one associated
            ("neuron", 0, "GO:1", 0.01, 0.3, 0.3),
            ("neuron", 1, "GO:2", 0.01, 0.7, 0.55),
            ("random", 0, "GO:1", 0.5, 0.1, 0.1),
        ]
    )
    cov = concept_coverage(table, {"sae": 4, "neuron": 2, "random": 2}, draws=200)
    assert cov["sae"]["n_concepts_associated"] == 2  # GO:1, GO:2; GO:3 has q 0.2
    assert cov["sae"]["n_concepts_f1_05"] == 2  # GO:1 (0.8) and GO:3 (0.6)
    assert cov["neuron"] == {"n_concepts_associated": 1, "n_concepts_f1_05": 1}
    assert cov["random"] == {"n_concepts_associated": 0, "n_concepts_f1_05": 0}
    # 2 of the 4 SAE features: the 6 equally likely pairs find 1, 2, 1, 2, 1, 1 concepts
    assert cov["sae"]["matched_n_features"] == 2
    assert cov["sae"]["n_concepts_associated_matched"] == 1


def test_matched_count_includes_features_without_associations():
    # 100 SAE features, only features 0-9 each find their own concept: a random 10 of the 100
    # finds about one concept, not ten (drawing only among associated features would say ten)
    table = _assoc([("sae", f, f"GO:{f}", 0.001, 0.9, 0.9) for f in range(10)])
    cov = concept_coverage(table, {"sae": 100, "neuron": 10}, draws=101, seed=3)
    assert cov["sae"]["n_concepts_associated"] == 10
    assert cov["sae"]["n_concepts_associated_matched"] == pytest.approx(1, abs=1)
    assert cov["neuron"]["n_concepts_associated"] == 0
