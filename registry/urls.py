from django.urls import path

from registry import api, api_governance

urlpatterns = [
    path("models/", api.ModelListCreate.as_view(), name="model-list"),
    path("models/<str:name>/", api.ModelDetail.as_view(), name="model-detail"),
    path("models/<str:name>/versions/", api.VersionListCreate.as_view(), name="version-list"),
    path("models/<str:name>/versions/<int:version>/", api.VersionDetail.as_view(), name="version-detail"),
    path("models/<str:name>/versions/<int:version>/artifact", api.VersionArtifact.as_view(), name="version-artifact"),
    path("artifacts/<str:sha256>", api.ArtifactByDigest.as_view(), name="artifact-by-digest"),
    path("models/<str:name>/versions/<int:version>/archive", api.VersionArchive.as_view(), name="version-archive"),
    # Promotions, rollback and the audit log (governance).
    path(
        "models/<str:name>/versions/<int:version>/promotions/",
        api_governance.PromotionCreate.as_view(),
        name="promotion-create",
    ),
    path("models/<str:name>/watch", api_governance.ModelWatch.as_view(), name="model-watch"),
    path("models/<str:name>/rollback", api_governance.ModelRollback.as_view(), name="model-rollback"),
    path("promotions/", api_governance.PromotionList.as_view(), name="promotion-list"),
    path("promotions/<int:request_id>/", api_governance.PromotionDetail.as_view(), name="promotion-detail"),
    path("promotions/<int:request_id>/approve", api_governance.PromotionApprove.as_view(), name="promotion-approve"),
    path("promotions/<int:request_id>/reject", api_governance.PromotionReject.as_view(), name="promotion-reject"),
    path("promotions/<int:request_id>/cancel", api_governance.PromotionCancel.as_view(), name="promotion-cancel"),
    path("audit/", api_governance.AuditList.as_view(), name="audit-list"),
    path("audit/export.csv", api_governance.AuditExport.as_view(), name="audit-export"),
]
