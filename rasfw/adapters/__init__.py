"""Model adapters, one module per model family; importing this package registers them."""

from rasfw.adapters import (
    flux,  # noqa: F401 - registration
    lumina_next,  # noqa: F401 - registration
    sd3,  # noqa: F401 - registration
    wan,  # noqa: F401 - registration
)
from rasfw.adapters.base import ProjectionCacheAdapter

__all__ = ["ProjectionCacheAdapter"]
