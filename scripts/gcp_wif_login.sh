# shellcheck shell=bash
# Source me: `source scripts/gcp_wif_login.sh`.
# Turns the job's GitLab OIDC ID token ($GITLAB_OIDC_TOKEN, from `id_tokens:`) into Google
# Application Default Credentials via Workload Identity Federation. What is written is an
# *external account* credential configuration: it names the token file, the WIF provider and
# the service account to impersonate; it holds no key. Google's STS exchanges the token (valid
# for this job only) for short-lived access tokens when a client needs one.
# Needs (non-secret, per-environment CI/CD variables): GCP_WIF_PROVIDER, GCP_SERVICE_ACCOUNT.
: "${GITLAB_OIDC_TOKEN:?no OIDC token: the job needs id_tokens: GITLAB_OIDC_TOKEN}"
: "${GCP_WIF_PROVIDER:?set GCP_WIF_PROVIDER (stack output wif_provider)}"
: "${GCP_SERVICE_ACCOUNT:?set GCP_SERVICE_ACCOUNT (stack output deployer_service_account)}"
# The provider's name is also the token's audience (`id_tokens: aud:`), which STS matches
# exactly: refuse any other shape here, with the form the bootstrap's `wif_provider` output has.
if [[ ! "$GCP_WIF_PROVIDER" =~ ^projects/[0-9]+/locations/global/workloadIdentityPools/[a-z0-9-]+/providers/[a-z0-9-]+$ ]]; then
  echo "error: GCP_WIF_PROVIDER=$GCP_WIF_PROVIDER is not projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<id> (stack output wif_provider)" >&2
  return 1 2>/dev/null || exit 1
fi
# The two Google endpoints the credential names; overridable only so the pipeline's delivery tests
# can point them at a local recording stand-in (tests/delivery/standins).
_sts="${GOOGLE_STS_URL:-https://sts.googleapis.com}"
_iamcredentials="${GOOGLE_IAMCREDENTIALS_URL:-https://iamcredentials.googleapis.com}"
_wif_dir="$(mktemp -d)"  # outside the project dir: never cached, never an artifact
chmod 700 "$_wif_dir"
printf '%s' "$GITLAB_OIDC_TOKEN" > "$_wif_dir/oidc-token"
cat > "$_wif_dir/credentials.json" <<JSON
{
  "type": "external_account",
  "audience": "//iam.googleapis.com/${GCP_WIF_PROVIDER}",
  "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
  "token_url": "${_sts}/v1/token",
  "credential_source": {"file": "${_wif_dir}/oidc-token"},
  "service_account_impersonation_url": "${_iamcredentials}/v1/projects/-/serviceAccounts/${GCP_SERVICE_ACCOUNT}:generateAccessToken"
}
JSON
export GOOGLE_APPLICATION_CREDENTIALS="$_wif_dir/credentials.json"
export CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE="$GOOGLE_APPLICATION_CREDENTIALS"
unset _wif_dir _sts _iamcredentials
