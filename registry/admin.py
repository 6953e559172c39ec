from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from accounts.roles import APPROVER, has_role
from audit.services import audit_record
from config.errors import DomainError
from config.http import client_ip
from registry import promotions
from registry.models import ModelVersion, PromotionRequest, RegisteredModel, Webhook


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
        "model",
        "version",
        "artifact_sha256",
        "artifact_size",
        "artifact_filename",
        "format",
        "status",
        "stage",
        "validation_report",
        "validated_at",
        "signature",
        "opset",
        "producer",
        "ir_version",
        "stage_changed_at",
        "stage_changed_by",
        "created_by",
        "created_at",
    ]


def _decide(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[PromotionRequest], verb: str
) -> None:
    """Admin actions go through the same services, checks and audit as the API."""
    decide = promotions.promotion_approve if verb == "approve" else promotions.promotion_reject
    for pk in queryset.values_list("pk", flat=True):
        try:
            decide(request_id=pk, reviewer=request.user, comment=f"{verb}d in the admin", source_ip=client_ip(request))
        except DomainError as exc:
            modeladmin.message_user(request, f"request #{pk}: {exc.message}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"request #{pk}: {verb}d", messages.SUCCESS)


@admin.action(description="Approve the selected requests (gates must pass; use the API to override)")
def approve_requests(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[PromotionRequest]) -> None:
    _decide(modeladmin, request, queryset, "approve")


@admin.action(description="Reject the selected requests")
def reject_requests(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[PromotionRequest]) -> None:
    _decide(modeladmin, request, queryset, "reject")


@admin.register(PromotionRequest)
class PromotionRequestAdmin(admin.ModelAdmin):
    """Decisions only through the actions (the services); rows are never edited by hand."""

    list_display = [
        "id",
        "version",
        "from_stage",
        "to_stage",
        "status",
        "gates_passed",
        "requester",
        "reviewer",
        "created_at",
    ]
    list_filter = ["status", "to_stage", "kind"]
    search_fields = ["version__model__name", "justification", "requester__username"]
    actions = [approve_requests, reject_requests]
    fields = [
        "version",
        "kind",
        "from_stage",
        "to_stage",
        "status",
        "requester",
        "justification",
        "gates_table",
        "reviewer",
        "comment",
        "override_reason",
        "replaced_version",
        "created_at",
        "decided_at",
    ]
    readonly_fields = fields

    @admin.display(boolean=True, description="gates")
    def gates_passed(self, obj: PromotionRequest) -> bool:
        return obj.gates_ok

    @admin.display(description="gates")
    def gates_table(self, obj: PromotionRequest) -> str:
        if not obj.gates:
            return "no gates"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((g.get("name"), "ok" if g.get("ok") else "FAILED", g.get("detail")) for g in obj.gates),
        )
        return format_html("<table><tr><th>gate</th><th>result</th><th>detail</th></tr>{}</table>", rows)

    # Approvers and admins (roles, not Django model permissions) review here; staff only.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, APPROVER) or super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, APPROVER) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "team", "events", "active", "created_at"]
    list_filter = ["active", "team"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        before = {}
        if change:
            before = Webhook.objects.filter(pk=obj.pk).values("url", "events", "team_id", "active").first() or {}
        super().save_model(request, obj, form, change)
        after = {"url": obj.url, "events": obj.events, "team_id": obj.team_id, "active": obj.active}
        action = "webhook.update" if change else "webhook.create"
        # The secret is never written to the log.
        audit_record(
            actor=request.user, action=action, obj=obj, before=before, after=after, source_ip=client_ip(request)
        )

    def delete_model(self, request: HttpRequest, obj: Webhook) -> None:
        audit_record(
            actor=request.user, action="webhook.delete", obj=obj, before={"url": obj.url}, source_ip=client_ip(request)
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for hook in queryset:
            self.delete_model(request, hook)
