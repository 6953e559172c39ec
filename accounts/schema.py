"""How the API's token authentication appears in the OpenAPI schema (drf-spectacular).

Defining the extension registers it, so AccountsConfig.ready imports this module.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mh_user_<prefix>_<secret>",
            "description": (
                "A person's API token (`mh_user_...`, from POST /api/v1/auth/token/). Application keys "
                "(`mh_app_...`) are not accepted here: they are for the prediction endpoints, which "
                "check them themselves."
            ),
        }


class WorkerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.WorkerKeyAuthentication"
    name = "workerKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mh_worker_<prefix>_<secret>",
            "description": (
                "An inference worker's key (`mh_worker_...`, from `manage.py modelhub_worker_key create`): "
                "it downloads artifacts by digest and opens no other route."
            ),
        }
