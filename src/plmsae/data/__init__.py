"""Stage 1, data: FASTA (:mod:`.fasta`), annotations (:mod:`.annotations`), the Gene Ontology
(:mod:`.ontology`) and the bundled demo subset of Swiss-Prot (:mod:`.demo`)."""
