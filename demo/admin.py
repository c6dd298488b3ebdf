from django.contrib import admin

from demo.models import Measurement, Summary


@admin.register(Measurement)
class MeasurementAdmin(admin.ModelAdmin):
    list_display = ["name", "value", "created_at"]
    list_filter = ["name"]


@admin.register(Summary)
class SummaryAdmin(admin.ModelAdmin):
    list_display = ["name", "count", "mean", "computed_at"]
