# The two commands of the README. Both set up .venv first when needed (launchers/install.sh
# skips everything when the environment is already in place).
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test lint clean-demo

setup:
	@launchers/install.sh

# The main job on the embedded default: 2 Horovod processes, synthetic images, a few steps.
demo: setup
	$(BIN)/horovodrun -np 2 -H localhost:2 --gloo \
	  $(BIN)/python -m tf_largebatch.train --flagfile=configs/demo.cfg \
	  --log_dir=$(RUN_DIR)

lint: setup
	$(BIN)/ruff check .

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q
