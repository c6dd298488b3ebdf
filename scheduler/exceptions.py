class SchedulerError(Exception):
    """The one exception the public API raises: unknown definition or run, bad
    parameter values, a resource that is not enabled. ``str(exc)`` is a message an
    operator can read."""


class NotFound(SchedulerError):
    """An unknown definition, run, resource or file (or one the user may not see)."""


class Forbidden(SchedulerError):
    """The user may see it but not do this to it (their role lacks the permission)."""


class InvalidRequest(SchedulerError):
    """Bad input: parameter values, a disabled definition or resource, a bad time."""
