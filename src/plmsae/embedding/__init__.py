"""Stage 2, embedding: load ESM-2 (:mod:`.model`), run it over proteins (:mod:`.forward`), write
the activation store (:mod:`.embedder`, ``plmsae embed``) and read it (:mod:`.store`)."""
