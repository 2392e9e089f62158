"""rasfw-edge: the `edge_energy` region metric, as a rasfw plugin."""

from rasfw_edge.metric import EdgeEnergy

__all__ = ["EdgeEnergy", "setup"]


def setup() -> str:
    """Entry point of the `rasfw.plugins` group: the metric is registered on import; return configs."""
    return "pkg://rasfw_edge.conf"
