class SchedulerError(Exception):
    """The one exception the public API raises: unknown definition or run, bad
    parameter values, a resource that is not enabled. ``str(exc)`` is a message an
    operator can read."""
