# Every target installs what it needs into .venv first, so each one works as the
# first command typed on a fresh machine.

PYTHON  ?= python3.11
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k fire -x"`.
PYTEST_ARGS ?=
# Board for `make bitstream`, e.g. `make bitstream BOARD=icebreaker`.
BOARD   ?= icebreaker
# Host link of the bitstream: uart, or usb (ecpix5-85f: LUNA on its ULPI PHY, issue 11).
LINK    ?= uart
# Array geometry for `make sim`/`make bench` (rows x cols).
ROWS    ?= 8
COLS    ?= 16

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test test-slow test-deep sim bench bitstream lint clean distclean help

help:
	@echo "make test       unit, golden-model and simulation tests (installs .venv first)"
	@echo "make sim        all eight SqueezeNet 1.1 Fire modules in Verilator, bit-exact table"
	@echo "make bench      cycle / utilization / simulator-speed benchmarks"
	@echo "make test-slow  the long simulations (whole detectors on every picture, full-size link run)"
	@echo "make test-deep  the Verilator property tests with the deep hypothesis profile (randomized, thousands)"
	@echo "make bitstream BOARD=icebreaker|ulx3s-85f|ecpix5-85f [LINK=usb]"
	@echo "make lint       ruff"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fpga,dram,sweep,usb]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-deep: $(STAMP)
	$(PY) -m pytest -n 2 -k property --hypothesis-profile=deep --hypothesis-show-statistics tests/hw $(PYTEST_ARGS)

sim: $(STAMP)
	$(PY) -m tools.run_fire --rows $(ROWS) --cols $(COLS)

bench: $(STAMP)
	$(PY) -m tools.bench --rows $(ROWS) --cols $(COLS)

bitstream: $(STAMP)
	$(PY) -m hw.boards.build $(BOARD) --link $(LINK)

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff==0.17.6
	$(VENV)/bin/ruff check hw quant sw sim tools tests

clean:
	rm -rf sim_build build results .pytest_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
