"""Putting features to work: candidate missing annotations (:mod:`.discover`), the features a
mutation gains or loses (:mod:`.variants`) and feature interventions with controls
(:mod:`.steer`). Each is a stage with a config, an engine and a public function; the pieces they
share (loading an SAE with its model, feature labels, tables) are in :mod:`.common`."""
