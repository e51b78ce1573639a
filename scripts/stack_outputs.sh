#!/usr/bin/env bash
# Prints dotenv lines about a stack for the deploy jobs' `artifacts:reports:dotenv`.
#   scripts/stack_outputs.sh ENV before  -> PREVIOUS_API_REVISION (what serves the API now)
#   scripts/stack_outputs.sh ENV after   -> API_URL, the e2e test's settings, the new revision
# Needs the Pulumi CLI (logged in, stack selected) and Google credentials (scripts/gcp_wif_login.sh).
set -euo pipefail
env_name="${1:?usage: stack_outputs.sh ENV before|after}"
phase="${2:?usage: stack_outputs.sh ENV before|after}"
# The helpers below run in the project's virtual environment: make it first (a no-op when the
# cache restored it), never assume it exists.
make -s setup >&2
py=".venv/bin/python"
api_service="${API_SERVICE:-flightpipe-api}"  # infra/components/runtime.py names the service
project="$(pulumi -C infra config get gcp:project --stack "$env_name")"
region="$(pulumi -C infra config get gcp:region --stack "$env_name" 2>/dev/null || echo us-central1)"
# GOOGLE_CLOUD_PROJECT: google-auth would otherwise look the project up (Resource Manager) for
# the federated credential, a call nobody needs.
revision="$(GOOGLE_CLOUD_PROJECT="$project" "$py" scripts/cloud_run.py serving-revision \
  --project "$project" --region "$region" --service "$api_service")"
echo "GOOGLE_CLOUD_PROJECT=${project}"
echo "GCP_REGION=${region}"
echo "API_SERVICE=${api_service}"
if [[ "$phase" == "before" ]]; then
  echo "PREVIOUS_API_REVISION=${revision}"
  exit 0
fi
outputs="$(pulumi -C infra stack output --stack "$env_name" --json)"
field() { "$py" -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$outputs" "$1"; }
echo "DEPLOYED_API_REVISION=${revision}"
echo "API_URL=$(field api_url)"
echo "FLIGHTPIPE_E2E_BASE_URL=$(field api_url)"
echo "FLIGHTPIPE_BROKER=pubsub"
echo "FLIGHTPIPE_TOPIC=$(field topic)"
# The secret holding the plain key the post-deploy test sends (infra/components/runtime.py).
echo "E2E_API_KEY_SECRET=$(field e2e_api_key_secret)"
