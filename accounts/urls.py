from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/token/", api.token_obtain, name="auth-token"),
    path("auth/me/", api.me, name="auth-me"),
]
