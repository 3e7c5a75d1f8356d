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
#   last call      carry [".whl", "models/smollm2-tokenizer"]
#                  command: bash bench/gpu-setup.sh install && export PYTHONPATH=/tmp/site:$PWD && ...
# `install` reassembles the vLLM wheel, installs everything into /tmp/site and checks the imports.
# Later calls on the same warm machine only need: export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cmd=${1:-}
case "$cmd" in
  prepare)
    bash ../shared/tools/gpu-wheels train .whl >/dev/null
    if [ ! -d .whl-vllm/part-1 ]; then
      bash ../shared/tools/gpu-wheels vllm .whl-vllm >/dev/null
      bash ../shared/tools/gpu-wheels split .whl-vllm
    fi
    mkdir -p models/smollm2-tokenizer
    cp models/SmolLM2-135M-Instruct/tokenizer* models/SmolLM2-135M-Instruct/chat_template.jinja models/smollm2-tokenizer/
    ls -d .whl-vllm/part-* ;;
  stash)
    mkdir -p /tmp/w && cp "${2:?part folder}"/* /tmp/w/ && ls /tmp/w | wc -l ;;
  install)
    (cd /tmp/w && for first in $(ls *.piece-00 2>/dev/null); do
        whole=${first%.piece-00}; cat "$whole".piece-* > "$whole" && rm "$whole".piece-*; done)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/w/*.whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    (cd /tmp && rm -rf deepspeed-* && tar xzf "$OLDPWD"/.whl/deepspeed-*.tar.gz && cd deepspeed-* \
      && DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . >/dev/null)
    PYTHONPATH=/tmp/site python3 -c "import vllm, trl, datasets, bitsandbytes, deepspeed, fire; print('installed: vllm', vllm.__version__, 'trl', trl.__version__)" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
