from __future__ import annotations

from django.urls import path

from inference.pipelines import api

urlpatterns = [
    path("pipelines/", api.PipelineListCreate.as_view(), name="pipeline-list"),
    path("pipelines/validate", api.PipelineValidate.as_view(), name="pipeline-validate"),
    path("pipelines/<slug:name>/", api.PipelineDetail.as_view(), name="pipeline-detail"),
    path("pipelines/<slug:name>/versions/", api.PipelineVersions.as_view(), name="pipeline-versions"),
    path("pipelines/<slug:name>/versions/<int:version>", api.PipelineVersionDetail.as_view(), name="pipeline-version"),
    path("feature-sets/", api.FeatureSetList.as_view(), name="feature-set-list"),
    path("feature-sets/<str:feature_set>/load", api.FeatureLoad.as_view(), name="feature-load"),
]
