from django.core.paginator import Paginator
from django.utils.functional import cached_property

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows, so a list over a million runs never
    runs a full COUNT(*); past the cap the admin shows "10001" results."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: COUNT_CAP + 1].count()
