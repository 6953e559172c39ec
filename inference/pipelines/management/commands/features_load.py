"""manage.py features_load --feature-set card --key card_id --file cards.csv|cards.parquet [--team fraud]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Team
from common.errors import ModelhubError
from inference.pipelines import features, services


class Command(BaseCommand):
    help = (
        "Load entities and their features into the online store (Redis, or the database when embedded). "
        "A new set belongs to --team (else no team); an existing set keeps its team."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--feature-set", required=True)
        parser.add_argument("--key", required=True, help="the column holding the entity key")
        parser.add_argument("--file", required=True, help="a .csv or .parquet file")
        parser.add_argument(
            "--team", default=None, help="the team a new set belongs to (must match an existing set's team)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        team = None
        if options["team"]:
            team = Team.objects.filter(name=options["team"]).first()
            if team is None:
                raise CommandError(f"no team named {options['team']!r}")
        try:
            result = services.feature_set_load(
                name=options["feature_set"],
                key=options["key"],
                rows=features.rows_from_file(options["file"]),
                user=None,
                team=team,
            )
        except ModelhubError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            f"loaded {result['entities']} entities of {result['feature_set']} (team {result['team'] or '-'}) "
            f"into {result['store']}: " + ", ".join(result["features"])
        )
