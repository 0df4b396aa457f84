#!/bin/sh
# docs/RESULTS.md, "Bayesian heads": VERSA meta-trained from the bundled omniglot backbone
# (6 minutes on this 2-core machine), then evaluated as bayes_omniglot.sh evaluates.
#   sh benchmarks/bayes_versa.sh [../shared/data/omniglot] > versa.jsonl
ROOT=${1:-../shared/data/omniglot}
test -f runs/omniglot-versa-conv4/model.json || .venv/bin/fewshot train --dataset omniglot --data-root "$ROOT" \
    --split background --rotations --method versa --backbone conv4 --init-from omniglot --way 20 --shot 5 \
    --query 5 --episodes 3000 --lr 0.0001 --lr-schedule cosine --seed 0 --out runs/omniglot-versa-conv4 >&2
for way in 5 20; do
  .venv/bin/python -m engine.cli evaluate --model runs/omniglot-versa-conv4 --dataset omniglot \
    --data-root "$ROOT" --split evaluation --way "$way" --shot 1 --episodes 600 --json 2>/dev/null
done
