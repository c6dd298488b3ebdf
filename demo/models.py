"""A few domain models that the demo task programs read and write through the ORM."""

from django.db import models
from django.utils import timezone


class Measurement(models.Model):
    name = models.CharField("name", max_length=100, help_text="e.g. temperature")
    value = models.FloatField("value", help_text="e.g. 21.5")
    created_at = models.DateTimeField("recorded", default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class Summary(models.Model):
    """Written by the orm_demo task: an aggregate over the measurements."""

    name = models.CharField("name", max_length=100)
    count = models.PositiveIntegerField("count")
    mean = models.FloatField("mean", null=True, blank=True)
    computed_at = models.DateTimeField("computed", default=timezone.now)

    class Meta:
        ordering = ["-computed_at"]
        verbose_name_plural = "summaries"

    def __str__(self) -> str:
        return f"{self.name}: n={self.count}"
