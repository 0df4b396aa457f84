#!/bin/sh
# docs/RESULTS.md, "Bayesian heads": the bundled omniglot backbone fine-tuned with ProtoNet's
# open-set ranking term (docs/TRAINING.md, --open-set-weight), then ProtoNet and bayes-proto
# evaluated on it as bayes_omniglot.sh evaluates the bundled one (same episodes).
#   sh benchmarks/bayes_open_set.sh [DATA_ROOT [OUT [more fewshot train options]]] > open_set.jsonl
# Later options win over the defaults below, e.g. the variants RESULTS reports:
#   sh benchmarks/bayes_open_set.sh ../shared/data/omniglot runs/open-set-fixed-t --no-learn-temperature
#   sh benchmarks/bayes_open_set.sh ../shared/data/omniglot runs/open-set-q15 --query 15 --lr-schedule cosine
#   sh benchmarks/bayes_open_set.sh ../shared/data/omniglot runs/open-set-w30 --way 30 --lr-schedule cosine
#   sh benchmarks/bayes_open_set.sh ../shared/data/omniglot runs/open-set-long --episodes 9000 --lr 0.0003 \
#       --lr-schedule cosine
ROOT=${1:-../shared/data/omniglot}
OUT=${2:-runs/omniglot-open-set}
[ $# -gt 2 ] && shift 2 || set --
test -f "$OUT/model.json" || .venv/bin/fewshot train --dataset omniglot --data-root "$ROOT" \
    --split background --method protonet --backbone conv4 --init-from omniglot --way 20 --shot 1 \
    --query 5 --open-set-weight 3 --episodes 3000 --lr 0.0001 --seed 0 --out "$OUT" "$@" >&2
for way in 5 20; do
  for method in protonet bayes-proto; do
    .venv/bin/python -m engine.cli evaluate --model "$OUT" --method "$method" --dataset omniglot \
      --data-root "$ROOT" --split evaluation --way "$way" --shot 1 --episodes 600 --json 2>/dev/null
  done
done
