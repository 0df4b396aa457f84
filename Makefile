# The whole set-up: `make run` starts the app, `make test` runs the suite.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: models-maml run test models bench clean-venv package

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	@$(BIN)/python -m fewshot_gui.platform_check
	$(BIN)/fewshot-gui

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -ra

# Reproduces assets/models/omniglot (the bundled Omniglot model); see docs/RESULTS.md.
models: $(STAMP)
	$(BIN)/fewshot train --dataset omniglot --data-root ../shared/data/omniglot --split background \
	    --rotations --method protonet --backbone conv4 --way 60 --shot 5 --query 5 --episodes 5000 \
	    --lr-step 2000 --seed 0 --out runs/omniglot-protonet-conv4
	rm -rf assets/models/omniglot && mkdir -p assets/models/omniglot
	cp runs/omniglot-protonet-conv4/model.safetensors runs/omniglot-protonet-conv4/model.json assets/models/omniglot/

# Reproduces assets/models/omniglot-maml (Proto-MAML, from the ProtoNet backbone above; docs/RESULTS.md).
models-maml: $(STAMP)
	$(BIN)/fewshot train --dataset omniglot --data-root ../shared/data/omniglot --split background \
	    --rotations --method protomaml --backbone conv4 --init-from omniglot --batch-norm running \
	    --inner-steps 1 --inner-lr 0.01 --first-order --way 20 --shot 1 --query 5 --meta-batch 4 \
	    --episodes 3000 --lr 0.0001 --lr-schedule cosine --seed 0 --out runs/omniglot-protomaml-conv4
	rm -rf assets/models/omniglot-maml && mkdir -p assets/models/omniglot-maml
	cp runs/omniglot-protomaml-conv4/model.safetensors runs/omniglot-protomaml-conv4/model.json assets/models/omniglot-maml/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py

# A one-folder desktop bundle in dist/ (PyInstaller), with its size part by part:
# VARIANT=cpu (default), full or predict (packaging/README.md says what each holds);
# ARCHIVE=1 also writes the .tar.gz to hand out.
package: $(STAMP)
	$(BIN)/python -c "import PyInstaller" 2>/dev/null || $(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test,package]'
	$(BIN)/python packaging/build.py $(if $(VARIANT),--variant $(VARIANT)) $(if $(ARCHIVE),--archive)

clean-venv:
	rm -rf $(VENV)
