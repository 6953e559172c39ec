"""People from the command line: `python manage.py modelhub_user add|set-role|add-to-team|
remove-from-team|reset-password|revoke-tokens|token|list`. Same services as the People page."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts import people
from accounts.roles import ALL_ROLES
from accounts.services import user_token_create
from config.errors import DomainError


class Command(BaseCommand):
    help = "Manage people: create accounts, set roles and teams, reset passwords, revoke or create tokens, list."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create an account (the password is printed once when generated)")
        add.add_argument("username")
        add.add_argument("--role", choices=ALL_ROLES, default="ml_engineer")
        add.add_argument("--password", default="", help="default: a generated one, printed once")
        add.add_argument("--email", default="")
        add.add_argument("--team", action="append", default=[], help="a team to join (repeat for more)")
        add.add_argument("--token", action="store_true", help="also create an API token and print it once")
        role = sub.add_parser("set-role", help="give a person exactly this role")
        role.add_argument("username")
        role.add_argument("role", choices=ALL_ROLES)
        team = sub.add_parser("add-to-team", help="add a person to a team")
        team.add_argument("username")
        team.add_argument("team")
        team.add_argument("--create-team", action="store_true", help="create the team if it does not exist")
        leave = sub.add_parser("remove-from-team", help="take a person out of a team")
        leave.add_argument("username")
        leave.add_argument("team")
        reset = sub.add_parser("reset-password", help="set a new password (printed once when generated)")
        reset.add_argument("username")
        reset.add_argument("--password", default="")
        revoke = sub.add_parser("revoke-tokens", help="revoke every API token of a person")
        revoke.add_argument("username")
        token = sub.add_parser("token", help="create an API token for a person and print it once")
        token.add_argument("username")
        token.add_argument("--name", default="cli")
        sub.add_parser("list", help="everyone, with role, teams and active tokens")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["action"].replace("-", "_"))(options)
        except DomainError as exc:
            raise CommandError(exc.message) from None

    def _add(self, options: dict[str, Any]) -> None:
        user, password = people.user_create(
            username=options["username"],
            role=options["role"],
            password=options["password"],
            email=options["email"],
            teams=options["team"],
            actor=None,
        )
        shown = password if not options["password"] else "(as given)"
        self.stdout.write(self.style.SUCCESS(f"user created: {user.username} / {shown} (role {options['role']})"))
        if options["token"]:
            self._print_token(user, "cli")

    def _set_role(self, options: dict[str, Any]) -> None:
        user = people.user_get(username=options["username"])
        people.user_set_role(user=user, role=options["role"], actor=None)
        self.stdout.write(f"{user.username}: role {options['role']}")

    def _add_to_team(self, options: dict[str, Any]) -> None:
        user = people.user_get(username=options["username"])
        people.user_add_to_team(user=user, team=options["team"], actor=None, create=options["create_team"])
        self.stdout.write(f"{user.username}: joined team {options['team']}")

    def _remove_from_team(self, options: dict[str, Any]) -> None:
        user = people.user_get(username=options["username"])
        people.user_remove_from_team(user=user, team=options["team"], actor=None)
        self.stdout.write(f"{user.username}: left team {options['team']}")

    def _reset_password(self, options: dict[str, Any]) -> None:
        user = people.user_get(username=options["username"])
        password = people.user_password_reset(user=user, actor=None, password=options["password"])
        shown = password if not options["password"] else "(as given)"
        self.stdout.write(self.style.SUCCESS(f"new password for {user.username}: {shown}"))

    def _revoke_tokens(self, options: dict[str, Any]) -> None:
        user = people.user_get(username=options["username"])
        count = people.user_tokens_revoke(user=user, actor=None)
        self.stdout.write(f"{user.username}: {count} token(s) revoked")

    def _token(self, options: dict[str, Any]) -> None:
        self._print_token(people.user_get(username=options["username"]), options["name"])

    def _print_token(self, user: Any, name: str) -> None:
        _, key = user_token_create(user=user, name=name)
        self.stdout.write(self.style.SUCCESS(f"API token for {user.username} (shown once): {key}"))

    def _list(self, options: dict[str, Any]) -> None:
        rows = people.people_list()
        self.stdout.write(f"{'username':20} {'role':12} {'active':6} {'tokens':6} teams")
        for p in rows:
            active = "yes" if p.active else "no"
            teams = ",".join(p.teams) or "-"
            self.stdout.write(f"{p.username:20} {p.role or '-':12} {active:6} {p.active_tokens:<6} {teams}")
