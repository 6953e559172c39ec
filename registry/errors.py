from __future__ import annotations

from config.errors import Conflict, DomainError


class InvalidName(DomainError):
    code = "invalid_name"


class DuplicateArtifact(Conflict):
    code = "duplicate_artifact"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class InvalidMetadata(DomainError):
    code = "invalid_metadata"


class VersionServing(Conflict):
    """Archiving a version that a production or staging endpoint still routes to."""

    code = "version_serving"
