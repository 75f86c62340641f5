# The course's commands. `make lab` and `make test` are the two the README starts with;
# both set everything up first (tools/setup.sh is idempotent).
VENV ?= .venv
BIN := $(VENV)/bin
FIRST_NOTEBOOK ?= chapters/01_background/01_what_makes_a_model_large.ipynb
LAB_ARGS ?=
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: setup lab test lint unit unit-fast nbval book browser notebooks learner learner-copy bench clean help

help:
	@echo "make lab        set up, then open the course in JupyterLab"
	@echo "make test       set up, then run every check CI runs (lint, tests, notebooks, book, browser)"
	@echo "make unit|nbval|lint|book|browser   one stage of the checks"
	@echo "make unit-fast  the unit tests not marked slow (a quick check while editing)"
	@echo "make notebooks  re-run the solution notebooks in learner mode and regenerate chapters/"
	@echo "make learner-copy DEST=../course-for-students   the repository without solutions, to publish"
	@echo "make bench      print the benchmark figures for this machine"

setup:
	@bash tools/setup.sh

lab: setup
	$(BIN)/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/$(FIRST_NOTEBOOK) $(LAB_ARGS)

test: setup
	@bash tools/run_checks.sh all

lint unit unit-fast nbval book browser: setup
	@bash tools/run_checks.sh $@

notebooks: setup
	$(BIN)/python tools/classroom.py build

learner: setup
	$(BIN)/python tools/classroom.py generate

learner-copy: setup
	@test -n "$(DEST)" || { echo "usage: make learner-copy DEST=../course-for-students" >&2; exit 2; }
	$(BIN)/python tools/classroom.py learner-copy "$(DEST)"

bench: setup
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_trainer.py
	$(BIN)/python benchmarks/bench_gpt_step.py
	$(BIN)/python benchmarks/bench_bpe.py
	$(BIN)/python benchmarks/bench_compress.py
	$(BIN)/python benchmarks/bench_frozen_trunk.py
	$(BIN)/python benchmarks/bench_llm.py

clean:
	rm -rf _build .pytest_cache .ruff_cache
