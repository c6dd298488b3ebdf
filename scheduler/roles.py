"""The three operator roles, seeded as groups with permissions.

- viewers: read everything they may see, download output files;
- operators: viewers + run now, cancel, re-run, manage recurrences;
- administrators: operators + define tasks, parameters and resources.

Which definitions a member sees is narrowed further by a definition's
``allowed_groups`` (scheduler/access.py).
"""

from __future__ import annotations

VIEWERS = "viewers"
OPERATORS = "operators"
ADMINISTRATORS = "administrators"

_VIEW = [
    "view_executionresource",
    "view_taskdefinition",
    "view_taskparameter",
    "view_recurrence",
    "view_run",
    "view_statusmessage",
    "view_outputfile",
    "view_pollerheartbeat",
    "download_outputfile",
]
_OPERATE = _VIEW + [
    "run_taskdefinition",
    "add_run",
    "cancel_run",
    "rerun_run",
    "add_recurrence",
    "change_recurrence",
    "delete_recurrence",
]
_ADMINISTER = _OPERATE + [
    "delete_run",  # one ended run, from its page (retention prunes by age)
    "add_taskdefinition",
    "change_taskdefinition",
    "delete_taskdefinition",
    "add_taskparameter",
    "change_taskparameter",
    "delete_taskparameter",
    "add_executionresource",
    "change_executionresource",
    "delete_executionresource",
    "view_auditevent",
    "view_apitoken",
    "add_apitoken",
    "delete_apitoken",
]

ROLE_PERMISSIONS: dict[str, list[str]] = {
    VIEWERS: _VIEW,
    OPERATORS: _OPERATE,
    ADMINISTRATORS: _ADMINISTER,
}


def sync_roles(apps=None) -> None:
    """Create or update the role groups. Safe to call again (migrations, tests)."""
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        perms = Permission.objects.filter(
            content_type__app_label="scheduler", codename__in=codenames
        )
        group.permissions.set(perms)
