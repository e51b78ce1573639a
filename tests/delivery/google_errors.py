"""Google's API names and the error bodies its APIs answer a refused call with.

Every body is a google.rpc.Status as JSON: `code`, `message`, `status` and, where Google adds
them, `details` (https://cloud.google.com/apis/design/errors).
"""

from __future__ import annotations

from typing import Any

RUN = "run.googleapis.com"
SECRET_MANAGER = "secretmanager.googleapis.com"  # pragma: allowlist secret
IAM_CREDENTIALS = "iamcredentials.googleapis.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
SERVICE_USAGE = "serviceusage.googleapis.com"
STORAGE = "storage.googleapis.com"
KMS = "cloudkms.googleapis.com"
IAM = "iam.googleapis.com"
CLOUD_IDENTITY = "cloudidentity.googleapis.com"
MONITORING = "monitoring.googleapis.com"

# The titles Google puts in a SERVICE_DISABLED message ("<title> has not been used in project").
TITLES: dict[str, str] = {
    RUN: "Cloud Run Admin API",
    SECRET_MANAGER: "Secret Manager API",  # pragma: allowlist secret
    IAM_CREDENTIALS: "IAM Service Account Credentials API",
    RESOURCE_MANAGER: "Cloud Resource Manager API",
    SERVICE_USAGE: "Service Usage API",
    STORAGE: "Cloud Storage API",
    KMS: "Cloud Key Management Service (KMS) API",
    IAM: "Identity and Access Management (IAM) API",
    CLOUD_IDENTITY: "Cloud Identity API",
    MONITORING: "Cloud Monitoring API",
}


def service_disabled(service: str, consumer: str) -> tuple[int, dict[str, Any]]:
    """Google's 403 for a call to an API the consumer project has not enabled.

    Body shape: google.rpc.Status with a google.rpc.Help link and a google.rpc.ErrorInfo whose
    reason is SERVICE_DISABLED, domain googleapis.com, metadata consumer/service
    (googleapis/googleapis google/api/error_reason.proto, SERVICE_DISABLED; full bodies quoted in
    google-gemini/gemini-cli#1343 and GoogleCloudPlatform/pbmm-on-gcp-onboarding#432).
    """
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={consumer}"
    title = TITLES.get(service, service)
    message = (
        f"{title} has not been used in project {consumer} before or it is disabled. Enable it by "
        f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for "
        "the action to propagate to our systems and retry."
    )
    return 403, {
        "error": {
            "code": 403,
            "message": message,
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {"description": "Google developers console API activation", "url": url}
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "consumer": f"projects/{consumer}",
                        "service": service,
                        "serviceTitle": title,
                        "containerInfo": consumer,
                        "activationUrl": url,
                    },
                },
            ],
        }
    }


def permission_denied(permission: str, resource: str) -> tuple[int, dict[str, Any]]:
    """Google's 403 for a caller without the permission: "Permission 'p' denied on resource 'r'
    (or it may not exist)." with ErrorInfo IAM_PERMISSION_DENIED (error_reason.proto,
    IAM_PERMISSION_DENIED; the message as google-github-actions/deploy-cloudrun#182 quotes it)."""
    return 403, {
        "error": {
            "code": 403,
            "message": f"Permission '{permission}' denied on resource '{resource}' "
            "(or it may not exist).",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": permission, "resource": resource},
                }
            ],
        }
    }


def not_found(what: str) -> tuple[int, dict[str, Any]]:
    return 404, {"error": {"code": 404, "message": f"{what} not found.", "status": "NOT_FOUND"}}
