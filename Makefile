# Two commands (see README): `make quickstart` and `make test`; the study: `make study-cpu`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUICK_RUN := runs/quickstart
STUDY_CPU := runs/multirun/seq_len_study_cpu
STUDY_CPU_OUT := experiments/results/synth_cpu

.PHONY: quickstart test install dev ffmpeg render-deps lint study-cpu study-rendered study-context default-model render-heldout render-soundfonts default-model-eval

ffmpeg:  ## ffmpeg is needed by musdb (and to read m4a / stem.mp4); installed with apt as root
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; \
	  else echo "please install ffmpeg (apt-get install ffmpeg / brew install ffmpeg)"; exit 1; fi; }

RENDER_DEBS := fluidsynth fluid-soundfont-gm opl3-soundfont timgm6mb-soundfont simutrans-data
SF2 := /usr/share/sounds/sf2
render-deps:  ## fluidsynth, General-MIDI SoundFonts and the MIDI songs of the rendered sets (apt, as root)
	@command -v fluidsynth >/dev/null && [ -f $(SF2)/FluidR3_GM.sf2 ] && [ -f $(SF2)/OPL-3_FM_128M.sf2 ] \
	  && [ -f $(SF2)/TimGM6mb.sf2 ] && [ -d /usr/share/games/simutrans/music ] || { \
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
CONTROL_NEAR := runs/multirun/context_control_near_arms_cpu
CONTROL_WHOLE := runs/multirun/context_control_whole_arms_cpu
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
	OMP_NUM_THREADS=1 $(BIN)/python $(SCRIPTS)/train.py +experiment=context_control_near_arms_cpu $(JOBLIB2)
	$(BIN)/python -m longsep.study.control $(CONTROL_NEAR) --out experiments/results/context_control_near
	OMP_NUM_THREADS=1 $(BIN)/python $(SCRIPTS)/train.py +experiment=context_study_rendered $(JOBLIB2)
	OMP_NUM_THREADS=1 $(BIN)/python $(SCRIPTS)/train.py +experiment=context_control_whole_arms_cpu $(JOBLIB2)
	$(BIN)/python -m longsep.study.control $(CONTROL_WHOLE) --out experiments/results/context_control_whole
	$(BIN)/python -m longsep.study $(CONTEXT) --arms --out experiments/results/context_rendered \
	  --oracle $(RENDERED_OUT)/oracle_irm2 --control experiments/results/context_control_whole

# The default model trains on the rendered set in one SoundFont (FluidR3) and is scored on the
# same test songs rendered with one it never heard, TimGM6mb (models/README.md). csound's GM
# bank is never used: it shares most of its instruments with TimGM6mb. render-soundfonts
# renders the training set of the two-SoundFont attempt (FluidR3 + OPL3 FM; not better).
TRAIN_SOUNDFONTS := $(SF2)/FluidR3_GM.sf2 $(SF2)/OPL-3_FM_128M.sf2
HELDOUT_SOUNDFONT := $(SF2)/TimGM6mb.sf2
DEFAULT_STORE := src/longsep/pretrained/umx_small_rendered
HELDOUT_OUT := experiments/results/soundfonts
render-heldout: install render-deps  ## the rendered set (FluidR3) and its test songs in the held-out SoundFont
	$(BIN)/python -m longsep.data.render --out data/rendered --sample-rate 22050 --workers 2
	$(BIN)/python -m longsep.data.render --out data/rendered_heldout --sample-rate 22050 --workers 2 \
	  --soundfont $(HELDOUT_SOUNDFONT) --splits test

render-soundfonts: render-heldout  ## + the training set in two SoundFonts (the two-SoundFont attempt, data=rendered_multi)
	$(BIN)/python -m longsep.data.render --out data/rendered_multi --sample-rate 22050 --workers 2 \
	  --soundfont $(TRAIN_SOUNDFONTS)

default-model: render-heldout  ## train the default model (src/longsep/pretrained/umx_small_rendered), score it on a SoundFont it never heard
	[ -f $(HELDOUT_OUT)/before_timgm6mb/summary.json ] || $(BIN)/python evaluate.py ckpt=$(DEFAULT_STORE) \
	  data=rendered_heldout backend=fast niter=1 out_dir=$(HELDOUT_OUT)/before_timgm6mb
	OMP_NUM_THREADS=1 $(BIN)/python train.py +experiment=default_model $(JOBLIB2)
	$(MAKE) default-model-eval

default-model-eval: render-heldout  ## score the default model on the held-out SoundFont beside its oracle IRM2, and on FluidR3
	$(BIN)/python evaluate.py data=rendered_heldout oracle=irm2 stft.sample_rate=16000 oracle_n_fft=1024 \
	  oracle_hop=256 backend=fast out_dir=$(HELDOUT_OUT)/oracle_irm2_timgm6mb
	$(BIN)/python evaluate.py ckpt=$(DEFAULT_STORE) data=rendered_heldout backend=fast niter=1 \
	  overwrite=true out_dir=$(HELDOUT_OUT)/default_model_timgm6mb
	$(BIN)/python evaluate.py ckpt=$(DEFAULT_STORE) data=rendered backend=fast niter=1 \
	  overwrite=true out_dir=$(HELDOUT_OUT)/default_model_fluidr3
	$(BIN)/python experiments/default_model_report.py --oracle $(HELDOUT_OUT)/oracle_irm2_timgm6mb \
	  --baseline before=$(HELDOUT_OUT)/before_timgm6mb after=$(HELDOUT_OUT)/default_model_timgm6mb \
	  --out $(HELDOUT_OUT)/default_model_vs_before.csv

# one pytest worker per core (pytest-xdist; an idle worker takes tests queued for a busy
# one); README commands that read what another wrote run in order inside one test
# (tests/test_readme.py, SHARED_WORK)
XDIST := -n auto --maxprocesses 4 --dist worksteal  # at most 4: each worker holds torch (~1-2 GB)
test: dev  ## the fast and integration tiers (what CI runs; README commands verbatim included)
	$(BIN)/pytest -m "not slow" $(XDIST)

test-fast: dev  ## the fast in-process tier alone (daily work)
	$(BIN)/pytest $(XDIST)

test-all: dev  ## every tier: fast, integration and slow (DDP, benchmarks, all models)
	$(BIN)/pytest -m "" $(XDIST)

lint:
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
