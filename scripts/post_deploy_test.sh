#!/usr/bin/env bash
# The post-deploy integration test: tests/e2e/test_deployed_api.py (the same file that runs
# locally against `flightpipe serve`) against the deployed API. It publishes a unique event to the
# real topic, polls the API until that flight appears and compares every field, and checks one
# known aggregate. If it fails, the API's traffic goes back to the revision that served before
# this deploy (PREVIOUS_API_REVISION, recorded by stack_outputs.sh) and the job fails.
# The rollback only moves traffic; main still holds the bad commit, so the fix is a revert
# (whose pipeline redeploys), and the next `pulumi up` puts traffic back on the latest revision.
set -euo pipefail
if [[ -f deploy.env ]]; then  # same job as the deploy (prod): the dotenv is not loaded yet
  set -a; source ./deploy.env; set +a
fi
: "${FLIGHTPIPE_E2E_BASE_URL:?no FLIGHTPIPE_E2E_BASE_URL: did the deploy job publish deploy.env?}"
: "${E2E_API_KEY_SECRET:?no E2E_API_KEY_SECRET: did the deploy job publish deploy.env?}"
make -s setup >&2  # the helpers and the test run in .venv: make it before the first use
# Cloud Run admits only authenticated callers: an ID token of the deployer for the API's URL.
FLIGHTPIPE_E2E_ID_TOKEN="$(.venv/bin/python scripts/cloud_run.py id-token \
  --audience "$FLIGHTPIPE_E2E_BASE_URL" --service-account "$GCP_SERVICE_ACCOUNT")"
# The API then wants an API key (X-API-Key): the plain key the program keeps in its own secret.
FLIGHTPIPE_E2E_API_KEY="$(.venv/bin/python scripts/cloud_run.py secret \
  --project "$GOOGLE_CLOUD_PROJECT" --secret "$E2E_API_KEY_SECRET")"
export FLIGHTPIPE_E2E_BASE_URL FLIGHTPIPE_E2E_ID_TOKEN FLIGHTPIPE_E2E_API_KEY FLIGHTPIPE_BROKER \
  FLIGHTPIPE_TOPIC GOOGLE_CLOUD_PROJECT

# A first deploy's grants are minutes old (IAM: typically 2, up to 7+ min,
# https://cloud.google.com/iam/docs/access-change-propagation); with nothing to roll back to, waiting costs nothing.
if [[ -z "${PREVIOUS_API_REVISION:-}" ]]; then export FLIGHTPIPE_E2E_DEADLINE_SECONDS="${FLIGHTPIPE_E2E_DEADLINE_SECONDS:-600}"; fi
if make test-e2e; then
  exit 0
fi
echo "post-deploy test failed on ${DEPLOYED_API_REVISION:-the new revision}" >&2
if [[ -n "${PREVIOUS_API_REVISION:-}" && "${PREVIOUS_API_REVISION}" != "${DEPLOYED_API_REVISION:-}" ]]; then
  echo "rolling ${API_SERVICE} back to ${PREVIOUS_API_REVISION}" >&2
  .venv/bin/python scripts/cloud_run.py shift-traffic --project "$GOOGLE_CLOUD_PROJECT" \
    --region "$GCP_REGION" --service "$API_SERVICE" --to "$PREVIOUS_API_REVISION"
else
  echo "no earlier revision to roll back to (first deploy, or nothing changed)" >&2
fi
exit 1
