"""Built-in strategies; importing this package registers them."""

from rasfw.strategies import fills, metrics, ratios, resets, starvation  # noqa: F401 - registration

__all__ = ["fills", "metrics", "ratios", "resets", "starvation"]
