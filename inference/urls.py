from __future__ import annotations

from django.urls import path, re_path

from inference import api, views
from inference.bandits import api as bandit_api
from inference.dataplane import ROUTES

urlpatterns = [
    path("api/v1/endpoints/", api.EndpointListCreate.as_view(), name="endpoint-list"),
    path("api/v1/endpoints/<slug:name>/", api.EndpointDetail.as_view(), name="endpoint-detail"),
    path("api/v1/endpoints/<slug:name>/traffic", api.TrafficView.as_view(), name="endpoint-traffic"),
    path("api/v1/endpoints/<slug:name>/traffic/revisions", api.RevisionList.as_view(), name="endpoint-revisions"),
    path("api/v1/endpoints/<slug:name>/traffic/rollback", api.RollbackView.as_view(), name="endpoint-rollback"),
    path("api/v1/endpoints/<slug:name>/keys/", api.KeyListCreate.as_view(), name="endpoint-keys"),
    path("api/v1/endpoints/<slug:name>/keys/<str:prefix>", api.KeyRevoke.as_view(), name="endpoint-key-revoke"),
    path("api/v1/endpoints/<slug:name>/bandits/", bandit_api.BanditList.as_view(), name="endpoint-bandits"),
    path(
        "api/v1/endpoints/<slug:name>/bandits/<str:router>/stats",
        bandit_api.BanditStats.as_view(),
        name="endpoint-bandit-stats",
    ),
    path(
        "api/v1/endpoints/<slug:name>/bandits/<str:router>/decisions",
        bandit_api.BanditDecisions.as_view(),
        name="endpoint-bandit-decisions",
    ),
]

# The prediction paths, declared once in inference.dataplane: one view hands them to the
# dispatcher, which the raw WSGI/ASGI fronts call too.
urlpatterns += [re_path(rf"^{route.pattern}$", views.dataplane, name=route.name) for route in ROUTES]

# OpenAPI descriptions of the prediction paths: Django matches the routes above first,
# the schema generator only sees these DRF stand-ins (they never serve a request).
_N = r"(?P<name>[A-Za-z0-9_-]{1,64})"
urlpatterns += [
    path("api/v1/endpoints/<slug:name>/predict", views.predict_doc),
    path("api/v1/endpoints/<slug:name>/feedback", views.feedback_doc),
    re_path(rf"^v2/models/{_N}/feedback$", views.feedback_doc),
    path("api/v1/endpoints/<slug:name>/explain", views.explain_doc),
    re_path(rf"^v2/models/{_N}/infer$", views.v2_infer_doc),
    re_path(rf"^v2/models/{_N}/explain$", views.v2_explain_doc),
    re_path(rf"^v2/models/{_N}$", views.v2_model_doc),
]
