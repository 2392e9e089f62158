"""How a transformer call runs: eagerly, through `torch.compile`, or as a replayed CUDA graph.

RAS fixes every step's active-token count before sampling starts, so every transformer call has one of
a few static shapes and only the contents of index buffers change. An executor runs the same call in one
of three ways, keyed by the call's shape key (see `Executor.run`):

* `eager` (`EagerExecution`): the call as it is; bit-exact;
* `compile` (`CompiledExecution`): `torch.compile(fullgraph=True, dynamic=False)`, one graph per key;
* `cudagraph` (`CUDAGraphExecution`): one captured CUDA graph per key, replayed with static buffers.
"""

from rasfw.execution.base import Executor, build_executor
from rasfw.execution.compiled import CompiledExecution
from rasfw.execution.cudagraph import CUDAGraphExecution
from rasfw.execution.eager import EagerExecution

__all__ = ["CUDAGraphExecution", "CompiledExecution", "EagerExecution", "Executor", "build_executor"]
