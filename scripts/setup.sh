#!/usr/bin/env bash
# One-command set-up: system tools (optional but used by tests), a virtual environment, plmsae.
#   bash scripts/setup.sh                    # creates .venv
#   PLMSAE_SAELENS=1 bash scripts/setup.sh   # also .venv-saelens, for the SAELens export test
#   PLMSAE_ESM=1 bash scripts/setup.sh       # also .esm-ref, for the ESM-C cross-check
# Torch: the CPU build 2.13.0 is pinned here because an unpinned torch pulls a multi-GB CUDA build;
# on a GPU machine install the torch you want first and run with PLMSAE_TORCH=skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # mmseqs2: homology-aware splits; chromium: browser tests of the HTML atlas.
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      mmseqs2 chromium >/dev/null) || echo "warning: apt-get could not install mmseqs2/chromium; the tests that need them will say so"
fi
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${PLMSAE_TORCH:-}" != skip ]; then .venv/bin/python -m pip install -q torch==2.13.0; fi
.venv/bin/python -m pip install -q -e ".[dev]"
if [ "${PLMSAE_SAELENS:-}" = 1 ]; then
  # SAELens pins its own torch/transformers, so it gets its own venv; tests/sae/test_export.py
  # loads plmsae's exported SAEs with it (about 4 minutes to install).
  [ -d .venv-saelens ] || "$PY" -m venv .venv-saelens
  .venv-saelens/bin/python -m pip install -q --upgrade pip
  .venv-saelens/bin/python -m pip install -q torch==2.13.0 sae-lens
fi
if [ "${PLMSAE_ESM:-}" = 1 ]; then
  # EvolutionaryScale's esm pins transformers<4.48.2 and pulls a CUDA torch, so it cannot sit in
  # .venv; tests/embedding/test_model_families.py compares transformers' ESM-C with it from
  # .esm-ref/, installed without its pins (only what esm.models.esmc imports).
  .venv/bin/python -m pip install -q --target .esm-ref --no-deps esm==3.2.1.post1 attrs zstd \
      cloudpathlib tenacity biotite brotli msgpack msgpack-numpy biopython httpx
fi
echo "plmsae installed in .venv: activate with '. .venv/bin/activate'"
