# make run   - the platform on http://127.0.0.1:8000, embedded default (SQLite, in-process serving),
#              served by `python -m config.serve` (processes and ONNX Runtime threads: config/serving.py)
# make test  - the whole suite against real PostgreSQL, Redis, Celery workers and Chromium
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run run-gunicorn deploy-check test lint fmt worker inference-worker beat up down install

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py modelhub_bootstrap
	$(PY) -m config.serve

# The same platform under gunicorn (WSGI) instead of the default ASGI front; see platform/gunicorn.conf.py.
run-gunicorn: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py modelhub_bootstrap
	$(VENV)/bin/gunicorn -c platform/gunicorn.conf.py config.wsgi

test: $(VENV)/.installed
	PYTHON=$(PY) scripts/test.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	$(PY) scripts/check_imports.py

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

worker: $(VENV)/.installed
	$(VENV)/bin/celery -A workers.celery worker -Q control,batch -l info

inference-worker: $(VENV)/.installed
	$(PY) -m workers.inference_worker --device $${DEVICE:-cpu}

beat: $(VENV)/.installed
	$(VENV)/bin/celery -A workers.celery beat -l info

# The deployment files, checked without Docker or a cluster (CI runs the same through tests/deploy).
deploy-check: $(VENV)/.installed
	$(PY) platform/compose-check
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.33.0 $$(ls platform/k8s/*.yaml | grep -v kustomization)
	$(PY) -m pytest -q -p no:cacheprovider tests/deploy/test_k8s_manifests.py -k "committed_keda_schema or scale_real_deployments"

up:
	docker compose up --build -d

down:
	docker compose down
