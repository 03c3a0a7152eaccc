"""The Gene Ontology (or any OBO ontology), read with obonet.

- Obsolete terms are dropped (counted in :attr:`Ontology.n_obsolete`, logged) and map to ``None``.
- ``alt_id`` s map to their primary term (:meth:`Ontology.primary`).
- Ancestors follow ``is_a`` and ``part_of`` (the relations along which GO annotations are
  propagated; ``regulates`` is not followed, as in the GO Consortium's own propagation and
  goatools). They include the term itself, the namespace root included, and are cached, so
  propagating the annotations of all of Swiss-Prot takes seconds.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plmsae._util import InputError
from plmsae.data._io import open_text

log = logging.getLogger(__name__)

#: Relations followed when propagating annotations to ancestors.
PROPAGATE_RELATIONS = ("is_a", "part_of")

#: GO namespace -> annotation category used across plmsae.
NAMESPACE_CATEGORY = {
    "biological_process": "GO:BP",
    "molecular_function": "GO:MF",
    "cellular_component": "GO:CC",
}

_QUOTED = re.compile(r'^"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Term:
    id: str
    name: str
    namespace: str
    definition: str = ""


class Ontology:
    """An OBO ontology: live terms, alt-id map, and cached ancestors over ``is_a``/``part_of``.

    Attributes
    ----------
    terms : dict[str, Term]
        Non-obsolete terms by primary ID.
    alt_ids : dict[str, str]
        ``alt_id`` -> primary ID.
    n_obsolete : int
        Number of obsolete terms dropped.
    graph : networkx.MultiDiGraph
        The obonet graph, obsolete terms included (edges child -> parent, keyed by relation),
        for anything not covered here (other relations, synonyms, cross-references).
    path : Path | None
    """

    def __init__(self, graph, path: str | os.PathLike | None = None):
        self.graph = graph
        self.path = None if path is None else Path(path)
        self.terms: dict[str, Term] = {}
        self.alt_ids: dict[str, str] = {}
        self.n_obsolete = 0
        for tid, data in graph.nodes(data=True):
            if "name" not in data:  # only referenced by an edge, never defined
                continue
            if data.get("is_obsolete") == "true":
                self.n_obsolete += 1
                continue
            self.terms[tid] = Term(
                tid, data["name"], data.get("namespace", ""), _unquote(data.get("def", ""))
            )
            for alt in data.get("alt_id", ()):
                self.alt_ids[alt] = tid
        if not self.terms:
            raise InputError(
                "no (non-obsolete) [Term] stanzas found.",
                path=self.path,
                fix="pass an OBO ontology such as go-basic.obo (plain or .gz).",
            )
        parents: dict[str, set[str]] = {t: set() for t in self.terms}
        for child, parent, relation in graph.edges(keys=True):
            if relation not in PROPAGATE_RELATIONS:
                continue
            c, p = self.primary(child), self.primary(parent)
            if c is not None and p is not None and c != p:
                parents[c].add(p)
        self._parents = {t: tuple(sorted(ps)) for t, ps in parents.items()}
        self._ancestors: dict[str, frozenset[str]] = {}
        if self.n_obsolete:
            log.info(
                "%s: dropped %d obsolete terms; %d terms, %d alt ids",
                self.path or "ontology",
                self.n_obsolete,
                len(self.terms),
                len(self.alt_ids),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Ontology":
        """Read an OBO file (plain or gzip, detected by content) with obonet."""
        import obonet

        path = Path(path)
        try:
            with open_text(path, "OBO ontology file") as fh:
                graph = obonet.read_obo(fh, ignore_obsolete=False)
        except InputError:
            raise
        except Exception as e:  # obonet raises plain ValueError/KeyError on malformed stanzas
            detail = " ".join(str(e).split())
            raise InputError(
                f"could not parse the OBO file ({type(e).__name__}: {detail}).",
                path=path,
                fix="pass a valid OBO 1.2/1.4 file such as go-basic.obo.",
            ) from e
        return cls(graph, path)

    def __len__(self) -> int:
        return len(self.terms)

    def __contains__(self, term_id: str) -> bool:
        return self.primary(term_id) is not None

    def primary(self, term_id: str) -> str | None:
        """The primary ID of a term or alt ID; ``None`` for obsolete or unknown IDs."""
        if term_id in self.terms:
            return term_id
        return self.alt_ids.get(term_id)

    def _term(self, term_id: str) -> Term:
        p = self.primary(term_id)
        if p is None:
            raise KeyError(
                f"{term_id!r} is not a live term of the ontology "
                f"{self.path or ''} (unknown or obsolete)"
            )
        return self.terms[p]

    def name(self, term_id: str) -> str:
        return self._term(term_id).name

    def namespace(self, term_id: str) -> str:
        """``biological_process``, ``molecular_function`` or ``cellular_component`` for GO."""
        return self._term(term_id).namespace

    def category(self, term_id: str) -> str:
        """The plmsae category of a term: ``GO:BP``/``GO:MF``/``GO:CC``, else the namespace."""
        ns = self._term(term_id).namespace
        return NAMESPACE_CATEGORY.get(ns, ns)

    def parents(self, term_id: str) -> tuple[str, ...]:
        """Direct parents over ``is_a`` and ``part_of`` (primary IDs, sorted)."""
        return self._parents[self._term(term_id).id]

    def ancestors(self, term_id: str) -> frozenset[str]:
        """All ancestors over ``is_a`` and ``part_of``, including the term itself (cached)."""
        tid = self._term(term_id).id
        got = self._ancestors.get(tid)
        return got if got is not None else self._compute_ancestors(tid, set())

    def _compute_ancestors(self, tid: str, visiting: set[str]) -> frozenset[str]:
        if tid in visiting:
            raise InputError(
                f"the is_a/part_of relations contain a cycle through {tid}.",
                path=self.path,
                fix="use a released ontology file (go-basic.obo).",
            )
        visiting.add(tid)
        out = {tid}
        for parent in self._parents[tid]:
            got = self._ancestors.get(parent)
            out |= got if got is not None else self._compute_ancestors(parent, visiting)
        visiting.discard(tid)
        result = self._ancestors[tid] = frozenset(out)
        return result

    def propagate(self, term_ids: Iterable[str]) -> set[str]:
        """The union of the ancestors of ``term_ids`` (alt IDs mapped). Obsolete and unknown IDs
        are skipped: callers that must count them check :meth:`primary` first."""
        out: set[str] = set()
        cache = self._ancestors
        for t in term_ids:
            p = t if t in self.terms else self.alt_ids.get(t)
            if p is None:
                continue
            got = cache.get(p)
            out |= got if got is not None else self._compute_ancestors(p, set())
        return out


def _unquote(definition: str) -> str:
    """obonet keeps ``def`` raw: ``"text" [refs]`` -> ``text``."""
    m = _QUOTED.match(definition)
    return m.group(1).replace('\\"', '"') if m else definition
