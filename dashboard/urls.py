from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views

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
