"""The scheduler's app, and the admin site it brings (the dashboard as its index).

The admin site and its config live here, not in scheduler/admin/: settings name
the config while apps load, and importing the admin package then would register
its pages before the models are ready."""

from django.apps import AppConfig
from django.contrib import admin
from django.contrib.admin import apps as admin_apps


class SchedulerConfig(AppConfig):
    default = True  # "scheduler" in INSTALLED_APPS; the admin's config is named in full
    default_auto_field = "django.db.models.BigAutoField"
    name = "scheduler"
    verbose_name = "Scheduler"

    def ready(self):
        from django.db.models.signals import post_migrate

        post_migrate.connect(_sync_periodic_tasks, sender=self)


def _sync_periodic_tasks(sender, using="default", plan=None, **kwargs):
    """After migrate: the periodic tasks declared in code become schedules
    (scheduler.periodic). Not for a migration run backwards to zero."""
    from django.conf import settings

    from scheduler.models import Recurrence

    if not settings.SCHEDULER_PERIODIC_SYNC:
        return
    try:
        Recurrence.objects.using(using).exists()
    except Exception:  # noqa: BLE001 - the tables are not there (migrated to zero)
        return
    from scheduler import periodic

    periodic.sync()


class SchedulerAdminSite(admin.AdminSite):
    site_header = "DjangoTaskScheduler"
    site_title = "Task scheduler"
    index_title = "Scheduler dashboard"
    index_template = "admin/scheduler_index.html"

    def index(self, request, extra_context=None):
        from scheduler.dashboard import dashboard_context

        context = dashboard_context(request.user)
        context.update(extra_context or {})
        return super().index(request, extra_context=context)


class SchedulerAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "scheduler.apps.SchedulerAdminSite"
