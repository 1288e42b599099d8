"""A third-party vlmzoo task: ``count`` (see ``vlmzoo_count_plugin.plugin``)."""

from vlmzoo_count_plugin.plugin import TASK_NAME, Count, CountResult

__all__ = ["TASK_NAME", "Count", "CountResult"]
