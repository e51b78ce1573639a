# Delivery: supply-chain checks, container images, the images' locks, and local proof of the
# GitLab pipeline. Included by the top-level Makefile (BIN, ENV and `setup` come from there).
# The GitLab jobs call these same targets.

# One Dockerfile, one target per service (services/Dockerfile); each image installs its own lock.
DOCKERFILE := services/Dockerfile
SERVICES := api subscriber
IMAGE_LOCKS := $(SERVICES:%=requirements/%.lock)
IMAGE_TAG ?= $(shell git rev-parse HEAD 2>/dev/null || echo local)
IMAGE_PREFIX ?= flightpipe
# --load puts the images in the local engine; set IMAGE_OUTPUT=--push (with a registry prefix)
# or IMAGE_OUTPUT= to only build (e.g. on a remote BuildKit builder).
IMAGE_OUTPUT ?= --load
GITLAB_CI_LOCAL_VERSION := 4.60.1
GITLAB_CI_LOCAL_PREFIX ?= $(HOME)/.cache/flightpipe/gitlab-ci-local
GITLAB_CI_LOCAL ?= $(GITLAB_CI_LOCAL_PREFIX)/node_modules/.bin/gitlab-ci-local

.PHONY: lock-runtime security security-static audit-deps images test-delivery test-e2e \
        ci-tools ci-validate ci-local-check ci-jobs

# Each image's lock: the core, the service's extra and the build backend (requirements/build.in),
# with hashes, at dev.lock's versions (uv docs, "Locking environments": `uv pip compile
# pyproject.toml --extra foo`, https://docs.astral.sh/uv/pip/compile/). `make lock` calls this.
lock-runtime: setup ## Re-resolve requirements/{api,subscriber}.lock (one image's deps each, hashes).
	@for service in $(SERVICES); do \
		echo "locking requirements/$$service.lock (--extra $$service)"; \
		$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra $$service \
			--generate-hashes --python-version 3.11 -q -c requirements/dev.lock \
			-o requirements/$$service.lock || exit 1; \
	done

security: security-static audit-deps ## bandit, detect-secrets, hadolint, pip-audit.

security-static: setup ## The offline part of `security`: bandit, detect-secrets, hadolint.
	@# B608: SQL is built from allow-listed identifiers only (the same reason ruff S608 is off).
	$(BIN)/bandit -q -r flightpipe services scripts --severity-level medium --skip B608
	git ls-files -z --cached --others --exclude-standard \
		| xargs -0 $(BIN)/detect-secrets-hook --baseline .secrets.baseline
	$(BIN)/hadolint $(DOCKERFILE)

audit-deps: setup ## pip-audit each image's lock (requirements/{api,subscriber}.lock; needs PyPI's JSON API).
	$(BIN)/pip-audit --strict --require-hashes --disable-pip --progress-spinner off \
		$(IMAGE_LOCKS:%=-r %)

images: ## Build both images with BuildKit, tagged with the commit (needs docker + buildx).
	@command -v docker >/dev/null && docker buildx version >/dev/null 2>&1 || { \
		echo "make images needs the docker CLI with the buildx plugin and a builder: a local" >&2; \
		echo "Docker Engine, or BUILDX_BUILDER naming a remote BuildKit (scripts/ci_builder.sh)." >&2; \
		echo "In the pipeline the Pulumi program builds and pushes the images (make deploy)." >&2; \
		exit 2; }
	@for service in $(SERVICES); do \
		docker buildx build -f $(DOCKERFILE) --target $$service \
			-t $(IMAGE_PREFIX)/$$service:$(IMAGE_TAG) $(IMAGE_OUTPUT) . || exit 1; \
	done

test-delivery: setup ## Delivery tests: hadolint, the images' CMDs from their own locks, the pipeline file.
	$(BIN)/pytest tests/delivery

test-e2e: setup ## The deployed-API test; FLIGHTPIPE_E2E_BASE_URL picks the target (default: local).
	$(BIN)/pytest tests/e2e/test_deployed_api.py

ci-tools: ## Install gitlab-ci-local (npm) into $(GITLAB_CI_LOCAL_PREFIX); it also needs rsync.
	@test -x $(GITLAB_CI_LOCAL) || npm install --no-audit --no-fund --prefix $(GITLAB_CI_LOCAL_PREFIX) \
		gitlab-ci-local@$(GITLAB_CI_LOCAL_VERSION)

ci-validate: ci-tools ## Validate .gitlab-ci.yml against GitLab's schema and list its jobs.
	$(GITLAB_CI_LOCAL) --list --variable CI_PIPELINE_SOURCE=merge_request_event --unset-variable CI_COMMIT_BRANCH
	$(GITLAB_CI_LOCAL) --list

ci-local-check: ci-tools setup ## Run the lint and unit-test jobs under gitlab-ci-local's shell executor.
	$(GITLAB_CI_LOCAL) --force-shell-executor --variable CI_PIPELINE_SOURCE=merge_request_event \
		--unset-variable CI_COMMIT_BRANCH lint unit-tests

# The pipeline's jobs, run for real (tests/delivery/pipeline_jobs.py): first the merge-request checks
# from a fresh clone of HEAD with a cold cache, then the Google Cloud jobs (preview, deploy-dev,
# post-deploy-test-dev and its rollback, deploy-prod) against recording stand-ins; one job at a
# time, and a job that leaves a process running fails. Commit first: it clones
# HEAD. Needs gitlab-ci-local, rsync, gcloud's Pub/Sub emulator; slow, as it runs every job in turn.
ci-jobs: setup ## Run the pipeline's jobs under gitlab-ci-local's shell executor (fresh clone, stand-ins).
	$(BIN)/pytest tests/delivery/pipeline_jobs.py -p no:cacheprovider
