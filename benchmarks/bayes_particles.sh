#!/bin/sh
# docs/RESULTS.md, "Bayesian heads": E-MAML, BMAML and ABML meta-trained briefly from the bundled
# omniglot backbone on this 2-core machine, then evaluated as bayes_omniglot.sh evaluates.
#   sh benchmarks/bayes_particles.sh [../shared/data/omniglot] > particles.jsonl
ROOT=${1:-../shared/data/omniglot}
COMMON="--dataset omniglot --data-root $ROOT --split background --rotations --backbone conv4 --init-from omniglot
  --batch-norm running --inner-steps 1 --inner-lr 0.01 --first-order --way 5 --shot 1 --query 5
  --episodes 1000 --lr 0.0001 --lr-schedule cosine --seed 0"
for method in emaml bmaml abml; do
  extra="--proto-start"
  [ "$method" != abml ] && extra="--particles 4 --proto-start"
  test -f runs/omniglot-$method-conv4/model.json || \
    .venv/bin/fewshot train $COMMON --method $method $extra --out runs/omniglot-$method-conv4 >&2
  for way in 5 20; do
    .venv/bin/python -m engine.cli evaluate --model runs/omniglot-$method-conv4 --dataset omniglot \
      --data-root "$ROOT" --split evaluation --way "$way" --shot 1 --episodes 600 --json 2>/dev/null
  done
done
