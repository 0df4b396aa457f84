#!/bin/sh
# docs/RESULTS.md, "Bayesian heads": ProtoNet against bayes-proto on the bundled omniglot
# backbone, the 20 evaluation alphabets, 600 seeded episodes each, out-of-episode detection on.
#   sh benchmarks/bayes_omniglot.sh [../shared/data/omniglot] > results.jsonl
ROOT=${1:-../shared/data/omniglot}
for task in "5 1" "20 1"; do
  set -- $task
  for method in protonet bayes-proto; do
    .venv/bin/python -m engine.cli evaluate --model omniglot --method "$method" --dataset omniglot \
      --data-root "$ROOT" --split evaluation --way "$1" --shot "$2" --episodes 600 --json 2>/dev/null
  done
done
