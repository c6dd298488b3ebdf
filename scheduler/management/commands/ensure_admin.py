"""Create the first administrator with a random password, printed once."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser with a random password (printed) unless it exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--reset", action="store_true", help="Give an existing user a new random password."
        )

    def handle(self, *args, username: str, reset: bool, **options) -> None:
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is not None and not reset:
            self.stdout.write(
                f"User {username!r} exists already; its password is unchanged "
                f"(new one: manage.py ensure_admin --reset)."
            )
            return
        password = secrets.token_urlsafe(12)
        if user is None:
            User.objects.create_superuser(username, f"{username}@localhost", password)
        else:
            user.set_password(password)
            user.is_staff = user.is_superuser = user.is_active = True
            user.save()
        self.stdout.write(f"Administrator: {username}   password: {password}")
