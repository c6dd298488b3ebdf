"""Administrators may delete an ended run from its page: the role groups are
synced again with scheduler.roles (which now gives them delete_run)."""

from django.db import migrations


def sync(apps, schema_editor):
    from scheduler.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0006_heartbeat_cron"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
