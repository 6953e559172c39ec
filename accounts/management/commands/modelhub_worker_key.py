"""Inference worker keys: `python manage.py modelhub_worker_key create NAME | list | revoke PREFIX`.

A worker key lets an inference worker on another host download artifacts by digest
(docs/serving-workers.md, "Artifacts"); it is printed once and only its hash is kept.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import WorkerKey
from accounts.services import worker_key_create, worker_key_revoke


class Command(BaseCommand):
    help = "Create, list or revoke inference worker keys (they only download artifacts by digest)."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it once (set it as MODELHUB_WORKER_KEY)")
        create.add_argument("name", help="what it is for, e.g. the host or the worker group")
        sub.add_parser("list", help="every key: name, prefix, last use, revoked")
        revoke = sub.add_parser("revoke", help="revoke the key with this prefix")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            found, key = worker_key_create(name=options["name"])
            self.stdout.write(key)
            self.stderr.write(f"worker key {found.name!r} created (prefix {found.prefix}); it is not shown again")
        elif action == "list":
            for found in WorkerKey.objects.all():
                state = f"revoked {found.revoked_at:%Y-%m-%d %H:%M}" if found.revoked_at else "active"
                used = f"{found.last_used_at:%Y-%m-%d %H:%M}" if found.last_used_at else "never"
                self.stdout.write(f"{found.prefix}  {found.name:<30} last used {used:<16}  {state}")
        elif worker_key_revoke(prefix=options["prefix"]) == 0:
            raise CommandError(f"no active worker key with prefix {options['prefix']!r}")
        else:
            self.stdout.write(f"revoked worker key {options['prefix']}")
