"""Application keys: creation (the secret is shown once) and revocation."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.keys import key_generate
from accounts.permissions import can_access_team
from audit.services import audit_record
from config.errors import NotFound
from inference import routing_cache
from inference.endpoints import InvalidPolicy
from inference.models import ApiKey, Endpoint


def api_key_create(
    *, name: str, endpoints: list[Endpoint], user: AbstractBaseUser, source_ip: str | None = None
) -> tuple[ApiKey, str]:
    """A new application key scoped to `endpoints`; the secret is returned once, only here."""
    if not name or len(name) > 100:
        raise InvalidPolicy("name: expected 1 to 100 characters")
    if not endpoints:
        raise InvalidPolicy("a key needs at least one endpoint")
    for endpoint in endpoints:
        if not can_access_team(user, endpoint.team_id):
            raise NotFound(f"no endpoint named {endpoint.name!r}")
    new = key_generate("app")
    with transaction.atomic():
        key = ApiKey.objects.create(name=name, prefix=new.prefix, hashed=new.hashed, created_by=user)
        key.endpoints.set(endpoints)
        audit_record(
            actor=user,
            action="apikey.create",
            obj=key,
            after={"name": name, "prefix": new.prefix, "endpoints": sorted(e.name for e in endpoints)},
            source_ip=source_ip,
        )
    routing_cache.changed()
    return key, new.key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, user: AbstractBaseUser, source_ip: str | None = None) -> ApiKey:
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=user, action="apikey.revoke", obj=key, after={"prefix": key.prefix}, source_ip=source_ip)
    routing_cache.changed()
    return key
