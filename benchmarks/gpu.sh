#!/usr/bin/env bash
# GPU benchmarks on one GPU machine, under 8 minutes in all (each step has its own time limit):
#   1. embed: plmsae embed (float16, SDPA attention, length-sorted token-budget batches) vs a plain
#      Hugging Face float32 loop, 2,000 Swiss-Prot proteins, offline ESM-2 8M, last layer;
#   2. torchrun embedding: two ranks (on two GPUs, or both on the one) write the demo store; it
#      must equal the one-process store byte for byte;
#   3. train: time to quality, plmsae vs EleutherAI sparsify (signum and Adam) on that store;
#   4. DDP: two ranks (nccl with two GPUs; with one GPU both ranks share it over gloo) against one
#      process with the same global batches.
# Results: one JSON file per step in $OUT (default benchmarks/gpu-results), summary on stdout.
#   bash benchmarks/gpu.sh            # from the repository root, with .venv holding CUDA torch
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src PLMSAE_NO_PROGRESS=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
[ "$NGPU" -ge 1 ] || { echo "no CUDA device visible to $PY" >&2; exit 2; }
# two ranks; with one GPU both use it (the embedder's barriers use gloo, not nccl)
RANK_DEVICE=$([ "$NGPU" -ge 2 ] && echo cuda || echo cuda:0)
FASTA=src/plmsae/data/files/demo.fasta.gz
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"; then
    echo "$name: ok in $((SECONDS - t0)) s: $(tail -c 600 "$OUT/$name.json" | tr -d '\n')"
  else
    echo "$name: FAILED or timed out after $((SECONDS - t0)) s (see $OUT/$name.log)"; status=1
  fi
}

"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), '$NGPU GPU(s)')"

step embed 120 "$PY" benchmarks/embed.py --device cuda --n 2000 --json

step embed_torchrun 120 bash -c "
  $PY -m plmsae embed $FASTA --out $WORK/one --layers 4 --device cuda:0 &&
  $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m plmsae embed $FASTA \
      --out $WORK/ranks --layers 4 --device $RANK_DEVICE &&
  diff -r $WORK/one $WORK/ranks >/dev/null && echo '{\"ranks\": 2, \"identical\": true}'"

step train 180 "$PY" benchmarks/sae_train.py --store "$WORK/one" --device cuda --tokens 2e7 \
  --latents 16384 --k 32 --batch-size 4096 --systems "plmsae;sparsify;sparsify-adam" --json

step ddp 90 bash -c "
  $PY -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_check.py \
      --out $WORK/ddp --device cuda >&2 &&
  $PY benchmarks/ddp_check.py --out $WORK/ddp --device cuda --compare"

exit $status
