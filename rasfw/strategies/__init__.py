"""Built-in strategies; importing this package registers them."""

from rasfw.strategies import metrics, ratios, resets, starvation  # noqa: F401 - registration

__all__ = ["metrics", "ratios", "resets", "starvation"]
