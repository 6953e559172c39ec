from django.contrib import admin

from registry.models import AuditEvent, ModelVersion, RegisteredModel


class VersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "status", "stage", "artifact_sha256", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "created_at"]
    search_fields = ["name", "description"]
    inlines = [VersionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["model", "version", "status", "stage", "created_at"]
    list_filter = ["status", "stage"]
    search_fields = ["model__name", "artifact_sha256"]
    # Stage and status change through services (approvals, validation), not by hand.
    readonly_fields = [
        "model", "version", "artifact_sha256", "artifact_size", "artifact_filename", "format", "status", "stage",
        "validation_report", "validated_at", "signature", "opset", "producer", "ir_version", "stage_changed_at",
        "stage_changed_by", "created_by", "created_at",
    ]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is never edited, from here or anywhere."""

    list_display = ["created_at", "actor_name", "action", "object_type", "object_repr", "source_ip"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor_name", "object_repr", "object_id"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
