"""manage.py features_load --feature-set card --key card_id --file cards.csv|cards.parquet"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inference.pipelines import features


class Command(BaseCommand):
    help = "Load entities and their features into the online store (Redis, or the database when embedded)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--feature-set", required=True)
        parser.add_argument("--key", required=True, help="the column holding the entity key")
        parser.add_argument("--file", required=True, help="a .csv or .parquet file")

    def handle(self, *args: Any, **options: Any) -> None:
        result = features.features_load(
            feature_set=options["feature_set"], key=options["key"], rows=features.rows_from_file(options["file"])
        )
        self.stdout.write(
            f"loaded {result['entities']} entities of {result['feature_set']} into {result['store']}: "
            + ", ".join(result["features"])
        )
