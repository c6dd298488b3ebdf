"""A fork://localhost resource named 'local', and the three role groups."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def seed(apps, schema_editor):
    ExecutionResource = apps.get_model("scheduler", "ExecutionResource")
    ExecutionResource.objects.get_or_create(
        name="local",
        defaults={"job_service_url": "fork://localhost", "max_concurrent_runs": 8},
    )
    # Permissions are normally made after all migrations; make them now so the
    # groups can be given them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    from scheduler.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
