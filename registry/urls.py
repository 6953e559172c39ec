from django.urls import path

from registry import api

urlpatterns = [
    path("models/", api.ModelListCreate.as_view(), name="model-list"),
    path("models/<str:name>/", api.ModelDetail.as_view(), name="model-detail"),
    path("models/<str:name>/versions/", api.VersionListCreate.as_view(), name="version-list"),
    path("models/<str:name>/versions/<int:version>/", api.VersionDetail.as_view(), name="version-detail"),
    path("models/<str:name>/versions/<int:version>/artifact", api.VersionArtifact.as_view(), name="version-artifact"),
    path("models/<str:name>/versions/<int:version>/archive", api.VersionArchive.as_view(), name="version-archive"),
]
