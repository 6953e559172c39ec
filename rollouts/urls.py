from __future__ import annotations

from django.urls import path

from rollouts import api

urlpatterns = [
    path("api/v1/endpoints/<slug:name>/rollouts", api.RolloutListCreate.as_view(), name="endpoint-rollouts"),
    path(
        "api/v1/endpoints/<slug:name>/rollouts/<int:rollout_id>",
        api.RolloutDetail.as_view(),
        name="endpoint-rollout",
    ),
    path(
        "api/v1/endpoints/<slug:name>/rollouts/<int:rollout_id>/<str:action>",
        api.RolloutAction.as_view(),
        name="endpoint-rollout-action",
    ),
]
