from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import approvals, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("assets/plotly-<str:version>.min.js", views.plotly_js, name="plotly-js"),
    path("models/", views.model_list, name="dash-models"),
    path("models/new", views.model_create, name="dash-model-create"),
    path("models/<slug:name>/", views.model_detail, name="dash-model"),
    path("models/<slug:name>/versions/<int:version>/", views.version_detail, name="dash-version"),
]

if approvals.AVAILABLE:
    urlpatterns += [
        path("approvals/", approvals.approval_list, name="dash-approvals"),
        path("approvals/<int:request_id>/", approvals.approval_detail, name="dash-approval"),
        path(
            "approvals/<int:request_id>/<str:decision>",
            approvals.approval_decide,
            name="dash-approval-decide",
        ),
        path("models/<slug:name>/versions/<int:version>/promote", approvals.promotion_request, name="dash-promote"),
        path("models/<slug:name>/rollback", approvals.production_rollback, name="dash-rollback"),
    ]
