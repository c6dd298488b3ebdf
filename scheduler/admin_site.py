from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


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


class SchedulerAdminConfig(AdminConfig):
    default_site = "scheduler.admin_site.SchedulerAdminSite"
