from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import approvals, endpoints, monitoring_views, people, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("assets/plotly-<str:version>.min.js", views.plotly_js, name="plotly-js"),
    path("models/", views.model_list, name="dash-models"),
    path("models/new", views.model_create, name="dash-model-create"),
    path("models/<slug:name>/", views.model_detail, name="dash-model"),
    path("models/<slug:name>/versions/<int:version>/", views.version_detail, name="dash-version"),
    path("approvals/", approvals.approval_list, name="dash-approvals"),
    path("approvals/<int:request_id>/", approvals.approval_detail, name="dash-approval"),
    path("approvals/<int:request_id>/<str:decision>", approvals.approval_decide, name="dash-approval-decide"),
    path("models/<slug:name>/versions/<int:version>/promote", approvals.promotion_request, name="dash-promote"),
    path("models/<slug:name>/rollback", approvals.production_rollback, name="dash-rollback"),
    path("endpoints/", endpoints.endpoint_list, name="dash-endpoints"),
    path("endpoints/new", endpoints.endpoint_create, name="dash-endpoint-create"),
    path("endpoints/<slug:name>/", endpoints.endpoint_detail, name="dash-endpoint"),
    path("endpoints/<slug:name>/traffic", endpoints.traffic_update, name="dash-traffic"),
    path("endpoints/<slug:name>/rollback", endpoints.traffic_rollback, name="dash-traffic-rollback"),
    path("endpoints/<slug:name>/rollouts", endpoints.rollout_start, name="dash-rollout-start"),
    path(
        "endpoints/<slug:name>/rollouts/<int:rollout_id>/<str:action>",
        endpoints.rollout_action,
        name="dash-rollout-action",
    ),
    path("endpoints/<slug:name>/settings", endpoints.endpoint_settings, name="dash-endpoint-settings"),
    path("endpoints/<slug:name>/keys", endpoints.key_create, name="dash-key-create"),
    path("endpoints/<slug:name>/keys/<str:prefix>/revoke", endpoints.key_revoke, name="dash-key-revoke"),
    path("people/", people.people_list, name="dash-people"),
    path("people/new", people.person_create, name="dash-person-create"),
    path("people/<str:username>/<str:action>", people.person_action, name="dash-person"),
    path("monitoring/", monitoring_views.monitoring_index, name="dash-monitoring"),
    path("monitoring/<slug:name>/", monitoring_views.monitoring_endpoint, name="dash-monitoring-endpoint"),
    path("monitoring/<slug:name>/charts.json", monitoring_views.monitoring_charts, name="dash-monitoring-charts"),
    path("alerts/", monitoring_views.alert_list, name="dash-alerts"),
    path("alerts/rules/new", monitoring_views.alert_rule_create, name="dash-alert-create"),
    path("alerts/rules/<int:rule_id>/delete", monitoring_views.alert_rule_delete, name="dash-alert-delete"),
]
