# The two commands of the README. Both set up .venv first when needed (launchers/install.sh
# skips everything when the environment is already in place).
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test test-unit lint clean-demo

setup:
	@launchers/install.sh

# TensorFlow's C++ INFO lines off (its warnings and errors stay), here for horovodrun itself:
# it imports TensorFlow to check its build and would print TensorFlow's start-up lines. The
# trainer sets the same default for its processes. An explicit TF_CPP_MIN_LOG_LEVEL wins.
export TF_CPP_MIN_LOG_LEVEL ?= 1
DEMO_FLAGS ?=

# The main job on the embedded default: 2 Horovod processes, generated images (configs/demo.cfg),
# then the run's curves drawn into its folder. DEMO_FLAGS: extra trainer flags (e.g. --epochs=2).
demo: setup
	$(BIN)/horovodrun -np 2 -H localhost:2 --gloo \
	  $(BIN)/python -m tf_largebatch.train --flagfile=configs/demo.cfg \
	  --log_dir=$(RUN_DIR) $(DEMO_FLAGS)
	@$(BIN)/python -m tf_largebatch.curves $(RUN_DIR) --out=$(RUN_DIR)/curves.png > /dev/null
	@echo "Curves drawn into $(RUN_DIR)/curves.png"

# Besides ruff: a trainer holds only what differs between the two (the shared run is
# tf_largebatch/experiment/runner.py), so each stays under 150 lines.
lint: setup
	$(BIN)/ruff check .
	@for f in tf_largebatch/train.py tf_largebatch/portable_train.py; do \
	  n=$$(wc -l < $$f); [ $$n -lt 150 ] || { echo "$$f has $$n lines, over 150: move what" \
	  "both trainers share into tf_largebatch/experiment/"; exit 1; }; done

# launchers/install_test_tools.sh: SLURM, munge and strace for the tests (apt-get as root;
# otherwise it names the command to run). Does nothing when they are installed.
# TEST_WORKERS: pytest-xdist processes, a test module at a time each (tests/conftest.py).
TEST_WORKERS ?= 2

test: lint
	@launchers/install_test_tools.sh
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The fast tier alone: the tests marked `unit` (in-process; no horovodrun, no trainer run).
test-unit: lint
	$(BIN)/python -m pytest -q -m unit -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
