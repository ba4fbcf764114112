# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.requirements.sha256
REQHASH := $(shell sha256sum requirements.txt | cut -d' ' -f1)

.PHONY: venv test demo bench clean-venv

# (Re)install only when .venv is missing or requirements.txt changed since the last install.
venv:
	@if [ ! -x $(PY) ] || [ "$$(cat $(STAMP) 2>/dev/null)" != "$(REQHASH)" ]; then \
		echo "[make venv] installing requirements into .venv"; \
		[ -x $(PY) ] || python3.11 -m venv .venv || python3 -m venv .venv; \
		$(PIP) install -q --disable-pip-version-check -r requirements.txt && \
		bash scripts/fix_opencv.sh $(PIP) && \
		echo "$(REQHASH)" > $(STAMP); \
	else echo "[make venv] .venv is up to date"; fi

test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: venv
	$(PY) -m stad.demo_pipeline

bench: venv
	@echo "Benchmarks are run one by one; see bench/RESULTS.md for the commands."

clean-venv:
	rm -rf .venv
