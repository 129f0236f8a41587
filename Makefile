# Two commands (see README): `make quickstart` and `make test`; the study: `make study-cpu`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICK_RUN := runs/quickstart
STUDY_CPU := runs/multirun/seq_len_study_cpu
STUDY_CPU_OUT := experiments/results/synth_cpu

.PHONY: quickstart test install dev ffmpeg lint study-cpu

ffmpeg:  ## ffmpeg is needed by musdb (and to read m4a / stem.mp4); installed with apt as root
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; \
	  else echo "please install ffmpeg (apt-get install ffmpeg / brew install ffmpeg)"; exit 1; fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: ffmpeg $(BIN)/python  ## runtime dependencies + the package (editable)
	$(BIN)/pip install -q -r requirements.txt

dev: ffmpeg $(BIN)/python  ## + test and lint dependencies (pytest, ruff, openunmix)
	$(BIN)/pip install -q -r requirements-dev.txt

quickstart: install  ## generate the synthetic set, train a small UMX on CPU, separate a test song
	$(BIN)/python train.py +experiment=quickstart hydra.run.dir=$(QUICK_RUN)
	$(BIN)/python separate.py model=$(QUICK_RUN)/model \
	  input="'data/synth/test/*/mixture.wav'" limit=1 out_dir=separated

study-cpu: install  ## the reduced sequence-length study on CPU (experiments/README.md), its report and context analyses
	$(BIN)/python train.py +experiment=seq_len_study_cpu hydra.sweep.dir=$(STUDY_CPU)
	$(BIN)/python benchmarks/seq_len_scaling.py --small --seq-lens 7 15 30 \
	  --models umx umx_transformer:qkv1D umx_transformer:qkvg1D auto_transformer:mha \
	  > $(STUDY_CPU_OUT)/seq_len_scaling.jsonl
	$(BIN)/python -m longsep.study $(STUDY_CPU) --out $(STUDY_CPU_OUT) \
	  --scaling $(STUDY_CPU_OUT)/seq_len_scaling.jsonl --context

test: dev  ## the test suite (fast tests; `$(BIN)/pytest -m slow` for the long ones)
	$(BIN)/pytest

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
