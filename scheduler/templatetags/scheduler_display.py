"""Template filters for scheduler.display: ``{{ run.started_at|when }}``,
``{{ f.size|size }}``, ``{{ span|seconds }}``."""

from django import template

from scheduler import display

register = template.Library()
register.filter("when", display.when)
register.filter("size", display.size)
register.filter("seconds", display.seconds)


@register.simple_tag
def zone_note():
    return display.zone_note()
