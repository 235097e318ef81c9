# Lottery system: build, run under Docker Compose, test and benchmark. `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Base images: official by default; `source ../shared/ci/docker-env.sh` (or your own exports)
# points them at local images when no registry can be reached.
PYTHON_IMAGE ?= python:3.11-slim
GO_IMAGE ?= golang:1.26
NETCAT_IMAGE ?= busybox:latest
export NETCAT_IMAGE GO_IMAGE

# Tags `make docker-image` gives the images; the compose file names the defaults (the Docker tests
# build and run their own, lottery-test/...).
SERVER_IMAGE ?= server:latest
CLIENT_IMAGE ?= client:latest

COMPOSE_FILE ?= docker-compose-dev.yaml
COMPOSE_PROJECT ?=
COMPOSE := docker compose $(if $(COMPOSE_PROJECT),-p $(COMPOSE_PROJECT)) -f $(COMPOSE_FILE)
# Python: every target that needs PyYAML, pytest, ruff or mypy runs $(PYTHON), the interpreter of a
# virtual environment (VENV, default .venv) that it first creates, or updates, from requirements.txt
# with the host's python3 (BOOTSTRAP_PYTHON) when it is missing or older than requirements.txt;
# nothing is installed with pip outside it. $(VENV)/requirements.txt is the copy installed last.
BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
VENV_READY := $(VENV)/requirements.txt
# The agency's linter, run as `go run` at this version (fetched once into the Go module cache).
STATICCHECK_VERSION ?= v0.8.2
BENCH_ARGS ?=
CHAOS_ARGS ?=
GO_SOURCES = $$(find . -path ./vendor -prune -o -name '*.go' -print)

.PHONY: status help docker-image secrets docker-compose-up docker-compose-down docker-compose-logs \
	docker-compose-reset build test test-go test-python check-docker bench chaos data lint venv

# The targets that run $(PYTHON) (their recipes are below).
secrets test-python bench chaos data lint: $(VENV_READY)

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

docker-image: ## Build the server and client images (PYTHON_IMAGE, GO_IMAGE as base images; SERVER_IMAGE, CLIENT_IMAGE tags)
	docker build --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -t $(SERVER_IMAGE) server/
	docker build --build-arg GO_IMAGE=$(GO_IMAGE) -t $(CLIENT_IMAGE) client/

secrets: ## Issue the missing TLS credentials (.secrets/) of the server and the agencies COMPOSE_FILE names
	@test -f $(COMPOSE_FILE) || { echo "$(COMPOSE_FILE) is missing: run 'python compose_maker.py N' first"; exit 1; }
	$(PYTHON) compose_maker.py --secrets-only --output $(COMPOSE_FILE)

docker-compose-up: secrets docker-image ## Build the images, issue missing credentials, start the server, then the agencies once it is healthy; says why if the central refuses to start
	$(PYTHON) tools/compose_up.py $(COMPOSE)

docker-compose-down: ## SIGTERM everything (10 s grace), then remove the containers (the storage volume stays)
	$(COMPOSE) stop -t 10
	$(COMPOSE) down

status: ## Table of the running central's round: bets, batches, FIN, winners per agency; draw pending or done (read in the server container)
	@timeout 20 $(COMPOSE) exec -T server python3 -m lottery.status || { \
	  echo "make status: the central is not running (start it with make docker-compose-up)"; exit 1; }

docker-compose-logs: ## Follow the logs of every container
	$(COMPOSE) logs -f

docker-compose-reset: ## Remove the containers and the server's storage volume (bets, FINs, draw)
	$(COMPOSE) down -v

build: ## Build the agency binary on the host into bin/client
	cd client && CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags='-s -w' -o ../bin/client .

check-docker:
	@docker info >/dev/null 2>&1 || { \
	  echo "make test: Docker is not available (docker info failed). The tests need a Docker engine with"; \
	  echo "the compose v2 plugin; here run 'source ../shared/ci/docker-env.sh' first. Nothing was skipped."; \
	  exit 1; }
	@docker compose version >/dev/null 2>&1 || { echo "make test: the docker compose v2 plugin is missing"; exit 1; }
	@command -v strace >/dev/null 2>&1 || { echo "make test: strace is missing (the fault tests inject fsync errors with it): apt-get install strace"; exit 1; }

test-go: ## Go unit tests with the race detector
	cd client && go test -race ./...

test-python: ## Python tests: unit, integration with real processes, Docker end to end
	$(PYTHON) -m pytest -v tests

test: check-docker lint test-go test-python ## Every check: lint, then every test, the Docker ones included (fails if Docker is missing)

bench: ## Benchmark: server + N Go agencies as processes (BENCH_ARGS="--agencies 50 --bets 1000000", "--vs /tmp/base", "--floor", "--floor-bets", "--restart-batches 3000000")
	$(PYTHON) tools/bench.py $(BENCH_ARGS)

chaos: ## Fault injection (python3 tools/chaos), 20 runs per fault (CHAOS_ARGS="--faults agency_kill --seed 7")
	$(PYTHON) tools/chaos --runs 20 $(CHAOS_ARGS)

data: ## Regenerate the default data set in .data/ (5 agencies, ~80,000 bets)
	$(PYTHON) tools/gen_data.py

lint: ## Static checks, all clean or it fails: gofmt -l, go vet, staticcheck; ruff; mypy --strict on server/
	cd client && unformatted=$$(gofmt -l $(GO_SOURCES)) && test -z "$$unformatted" || { echo "gofmt needed: $$unformatted"; exit 1; }
	cd client && go vet ./...
	cd client && go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	$(PYTHON) -m ruff check server tools tests compose_maker.py
	$(PYTHON) -m mypy --strict server/

venv: $(VENV_READY) ## Create or update the Python environment .venv (VENV) from requirements.txt (the targets that need it do this themselves)

$(VENV_READY): requirements.txt
	@$(BOOTSTRAP_PYTHON) -m venv $(VENV) || { echo "make: '$(BOOTSTRAP_PYTHON) -m venv' failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	cp requirements.txt $@

# --- Docker Swarm: the same system as a stack, and a three-node lab on one machine (docs/swarm.md) ---
# STACK_FILE is written by `python compose_maker.py N` beside COMPOSE_FILE. REGISTRY (host[:port],
# optional): swarm-up pushes the images there and the nodes pull them; without it every node must
# hold the images already (docker save | docker load, docs/swarm.md). LOTTERY_STORAGE: an absolute
# directory (the same on every node, e.g. NFS) instead of the node-local volume; LOTTERY_DATA_DIR:
# where the agencies' files are on every node (default: .data/ of this checkout).
STACK ?= lottery
STACK_FILE ?= $(COMPOSE_FILE:.yaml=.stack.yaml)
REGISTRY ?=
LOTTERY_STORAGE ?=
LOTTERY_DATA_DIR ?=
SWARM_LOGS_ARGS ?= -f
SWARM_LAB_ARGS ?=
SWARM_SERVER_IMAGE = $(if $(REGISTRY),$(REGISTRY)/lottery-server:latest,$(SERVER_IMAGE))
SWARM_CLIENT_IMAGE = $(if $(REGISTRY),$(REGISTRY)/lottery-client:latest,$(CLIENT_IMAGE))
SWARM_ENV = SERVER_IMAGE=$(SWARM_SERVER_IMAGE) CLIENT_IMAGE=$(SWARM_CLIENT_IMAGE) \
	$(if $(LOTTERY_STORAGE),LOTTERY_STORAGE=$(LOTTERY_STORAGE)) $(if $(LOTTERY_DATA_DIR),LOTTERY_DATA_DIR=$(LOTTERY_DATA_DIR))

.PHONY: swarm-up swarm-logs swarm-status swarm-down swarm-lab swarm-lab-down
swarm-up swarm-lab swarm-lab-down: $(VENV_READY)

swarm-up: docker-image ## Deploy STACK_FILE as stack STACK on this swarm manager (labels this node lottery.storage=true if no node has it)
	@test -f $(STACK_FILE) || { echo "$(STACK_FILE) is missing: run 'python compose_maker.py N' first"; exit 1; }
	@test "$$(docker info -f '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true || { \
	  echo "make swarm-up: this Docker engine is not a swarm manager: 'docker swarm init' first (docs/swarm.md)"; exit 1; }
	$(PYTHON) compose_maker.py --secrets-only --output $(STACK_FILE)
	@if ! docker node inspect -f '{{index .Spec.Labels "lottery.storage"}}' $$(docker node ls -q) | grep -qx true; then \
	  echo "no node has the label lottery.storage=true: the central's storage will be on this one"; \
	  docker node update --label-add lottery.storage=true $$(docker info -f '{{.Swarm.NodeID}}') >/dev/null; fi
	$(if $(REGISTRY),docker tag $(SERVER_IMAGE) $(SWARM_SERVER_IMAGE) && docker push $(SWARM_SERVER_IMAGE))
	$(if $(REGISTRY),docker tag $(CLIENT_IMAGE) $(SWARM_CLIENT_IMAGE) && docker push $(SWARM_CLIENT_IMAGE))
	$(SWARM_ENV) docker stack deploy --resolve-image $(if $(REGISTRY),always --with-registry-auth,never) -c $(STACK_FILE) $(STACK)

swarm-logs: ## Follow the logs of every service of stack STACK (SWARM_LOGS_ARGS="" prints them and returns)
	@services=$$(docker stack services -q $(STACK)); test -n "$$services" || { echo "no stack $(STACK)"; exit 1; }; \
	for service in $$services; do docker service logs $(SWARM_LOGS_ARGS) $$service & done; wait

swarm-status: ## Where each task of stack STACK runs, then the central's table (make status) from its container on this node
	@docker stack ps $(STACK) --format 'table {{.Name}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}'
	@container=$$(docker ps -q --filter label=com.docker.swarm.service.name=$(STACK)_server | head -n 1); \
	test -n "$$container" || { echo "the central's task does not run on this node: run make swarm-status on its node (docker stack ps $(STACK))"; exit 1; }; \
	docker exec $$container python3 -m lottery.status

swarm-down: ## Remove stack STACK (services, network, secrets, configs) and wait for its containers; the storage stays
	docker stack rm $(STACK)
	@for i in $$(seq 1 120); do \
	  test -z "$$(docker ps -aq --filter label=com.docker.stack.namespace=$(STACK))$$(docker network ls -q --filter label=com.docker.stack.namespace=$(STACK))" && exit 0; \
	  sleep 0.5; done; echo "make swarm-down: stack $(STACK) still has containers or networks after 60 s"; exit 1

swarm-lab: docker-image ## A three-node swarm on this machine (tools/swarm_lab.py: dockerd per network namespace) running the stack
	$(PYTHON) tools/swarm_lab.py up $(SWARM_LAB_ARGS)

swarm-lab-down: ## Remove the lab: its engines, namespaces, links, mounts and files (the host's engine is left alone)
	$(PYTHON) tools/swarm_lab.py down
