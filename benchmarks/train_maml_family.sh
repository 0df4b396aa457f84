#!/usr/bin/env bash
# The MAML-family table of docs/RESULTS.md: every method from the bundled ProtoNet backbone, same budget.
# Run from the repository root: bash benchmarks/train_maml_family.sh [METHOD ...]  (about 12 minutes on 2 cores)
set -u
methods="${*:-maml anil metasgd reptile protomaml}"
for m in $methods; do
  extra="--batch-norm running"
  [ $m = anil ] && extra=""  # its backbone runs as ProtoNet's, on running statistics already; it refuses the flag
  [ $m = protomaml ] && extra="$extra --inner-lr 0.01"
  [ $m != protomaml ] && extra="$extra --inner-lr 0.05"
  [ $m = maml ] && extra="$extra --first-order"
  start=$(date +%s)
  nice -n 5 .venv/bin/fewshot train --dataset omniglot --data-root ../shared/data/omniglot --split background --rotations \
    --method $m --backbone conv4 --init-from omniglot --inner-steps 3 $extra \
    --way 5 --shot 1 --query 5 --meta-batch 4 --episodes 300 --lr 0.0001 --lr-schedule cosine --seed 0 \
    --out runs/family-$m > /tmp/family-$m.log 2>&1
  end=$(date +%s)
  echo "TRAIN $m $((end-start)) s"
  for w in 5 20; do
    echo "EVAL $m $w $(.venv/bin/fewshot evaluate --model runs/family-$m --dataset omniglot --data-root ../shared/data/omniglot --split evaluation --way $w --shot 1 --query 15 --episodes 200 --seed 0 --json)"
  done
done
