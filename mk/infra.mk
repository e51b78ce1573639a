# Pulumi targets (included by the top-level Makefile, which defines ENV ?= dev and BIN).
# `make deploy ENV=dev` runs `pulumi up --stack dev` in infra/; it needs the Pulumi CLI
# (https://www.pulumi.com/docs/install/), a logged-in state backend (`pulumi login gs://...`)
# and Google credentials (`gcloud auth application-default login`, or CI's Workload Identity
# Federation), plus a Docker daemon with buildx for the image builds.
PULUMI ?= pulumi
PULUMI_STACK_DIR := infra

.PHONY: infra-test preflight

define require_pulumi
	@command -v $(PULUMI) >/dev/null 2>&1 || { \
	  echo "error: the Pulumi CLI ('$(PULUMI)') is not installed or not on PATH;" >&2; \
	  echo "       install it: curl -fsSL https://get.pulumi.com | sh" >&2; exit 127; }
endef

deploy: setup ## Deploy the stack ENV (dev|prod) to Google Cloud: pulumi up --stack $(ENV).
	$(require_pulumi)
	cd $(PULUMI_STACK_DIR) && $(PULUMI) up --stack $(ENV) --yes

preview: setup ## Show what `make deploy ENV=...` would change: pulumi preview --stack $(ENV) --diff.
	$(require_pulumi)
	cd $(PULUMI_STACK_DIR) && $(PULUMI) preview --stack $(ENV) --diff

infra-test: setup ## Policy tests of the Pulumi program under mocks (no CLI, no cloud).
	$(BIN)/pytest tests/infra -q

preflight: setup ## Check read-only that stack ENV (dev|prod) can be deployed: APIs, bootstrap, config.
	$(BIN)/python scripts/preflight.py $(ENV)
