# Two commands (see README): `make quickstart` and `make test`; the study: `make study-cpu`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICK_RUN := runs/quickstart
STUDY_CPU := runs/multirun/seq_len_study_cpu
STUDY_CPU_OUT := experiments/results/synth_cpu

.PHONY: quickstart test install dev ffmpeg render-deps lint study-cpu study-rendered study-context default-model

ffmpeg:  ## ffmpeg is needed by musdb (and to read m4a / stem.mp4); installed with apt as root
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; \
	  else echo "please install ffmpeg (apt-get install ffmpeg / brew install ffmpeg)"; exit 1; fi; }

RENDER_DEBS := fluidsynth fluid-soundfont-gm simutrans-data
render-deps:  ## fluidsynth, a General-MIDI SoundFont and the MIDI songs of the rendered set (apt, as root)
	@command -v fluidsynth >/dev/null && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] \
	  && [ -d /usr/share/games/simutrans/music ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $(RENDER_DEBS); \
	  else echo "please install $(RENDER_DEBS) (Debian/Ubuntu: sudo apt-get install $(RENDER_DEBS))"; exit 1; fi; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: ffmpeg $(BIN)/python  ## runtime dependencies + the package (editable); no rendering packages
	$(BIN)/pip install -q -r requirements.txt

dev: ffmpeg render-deps $(BIN)/python  ## + test and lint dependencies (pytest, ruff, openunmix) and render-deps
	$(BIN)/pip install -q -r requirements-dev.txt

quickstart: install  ## separate a song with the default model, then train a small UMX on CPU and separate with it
	$(BIN)/python -m longsep.data.synth --out data/synth --workers 2
	$(BIN)/python separate.py input="'data/synth/test/*/mixture.wav'" limit=1 out_dir=separated/default
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

STUDY_RENDERED := runs/multirun/seq_len_study_rendered
CONTROL := runs/multirun/context_control_cpu
RENDERED_OUT := experiments/results/rendered_cpu
study-rendered: install render-deps  ## the study on rendered music with models that learn, and the long-context controls
	$(BIN)/python -m longsep.data.render --out data/rendered --sample-rate 22050 --workers 2
	$(BIN)/python evaluate.py data=rendered oracle=irm2 stft.sample_rate=16000 oracle_n_fft=1024 \
	  oracle_hop=256 backend=fast out_dir=$(RENDERED_OUT)/oracle_irm2
	$(BIN)/python train.py +experiment=seq_len_study_rendered
	$(BIN)/python train.py +experiment=context_control_cpu
	$(BIN)/python -m longsep.study $(STUDY_RENDERED) --out $(RENDERED_OUT) --oracle $(RENDERED_OUT)/oracle_irm2
	$(BIN)/python -m longsep.study $(CONTROL)/synth_positive --out $(RENDERED_OUT)/control_positive
	$(BIN)/python -m longsep.study $(CONTROL)/synth_negative --out $(RENDERED_OUT)/control_negative

CONTROL_ARMS := runs/multirun/context_control_arms_cpu
CONTEXT := runs/multirun/context_study_rendered
JOBLIB2 := hydra/launcher=joblib hydra.launcher.n_jobs=2
SCRIPTS ?= .
study-context: install render-deps  ## the pre-registered context study (experiments/README.md): control, then the grid; resumes
	$(MAKE) study-context-steps

study-context-pinned: install render-deps  ## the same from a copy of the code pinned at HEAD (.sweep/): edit freely while it runs
	experiments/run_pinned.sh

study-context-steps:  # the study's commands (SCRIPTS: where train.py is, for a pinned copy)
	$(BIN)/python -m longsep.data.render --out data/rendered --sample-rate 22050 --workers 2
	OMP_NUM_THREADS=1 $(BIN)/python $(SCRIPTS)/train.py +experiment=context_control_arms_cpu $(JOBLIB2)
	$(BIN)/python -m longsep.study.control $(CONTROL_ARMS) --out experiments/results/context_control
	OMP_NUM_THREADS=1 $(BIN)/python $(SCRIPTS)/train.py +experiment=context_study_rendered $(JOBLIB2)
	$(BIN)/python -m longsep.study $(CONTEXT) --arms --out experiments/results/context_rendered \
	  --oracle $(RENDERED_OUT)/oracle_irm2

default-model: install render-deps  ## train the default model (src/longsep/pretrained/umx_small_rendered) on the rendered set
	$(BIN)/python -m longsep.data.render --out data/rendered --sample-rate 22050 --workers 2
	$(BIN)/python train.py +experiment=default_model

test: dev  ## the fast and integration tiers (what CI runs; README commands verbatim included)
	$(BIN)/pytest -m "not slow"

test-fast: dev  ## the fast in-process tier alone (daily work)
	$(BIN)/pytest

test-all: dev  ## every tier: fast, integration and slow (DDP, wheel, benchmarks, all models)
	$(BIN)/pytest -m ""

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
