"""What every benchmark and load test shares, so each script holds only what it measures.

- `cli`: one argument/logging set-up and one meaning of `--json` (the last stdout line is the record).
- `session`: a private local Ray (`local_ray`) or Ray + Serve (`ServeSession`), deployed from
  `serve_config.yaml` as `serve run` does, and edited copies of its applications.
- `load`: single requests, waiting for a condition, closed-loop users on threads (one route, or
  round-robin over several), a measured window of them and its request statistics.
- `locust`: one headless-Locust launcher (blocking with stats, or in the background) and its stop.
- `replicas`: Serve's replicas (ids, pids, counts, /healthz of one) and their memory, sampled.
- `node_memory`: the whole node's memory by process role (replicas, controller, ingress, model
  store, idle workers, Ray's own), sampled, and the weights in the object store.
- `clones`: copies of a model artifact with their own weights, as many distinct models as needed.
- `models`: random-weight BERT classifiers (shape and bytes without a checkpoint).
- The machine record is the product's own `loading.host.machine_info`, plus `machine.lscpu` (the
  CPU's name and int8 flags); the timer is `compression.timing.best_ms`.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project checkout
