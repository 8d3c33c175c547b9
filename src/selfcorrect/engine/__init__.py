"""Generation backends behind one contract (:class:`Backend`): the transformers :class:`Engine` and vLLM.

Layers, each importing only those listed before it: ``plan`` (torch-free batch planning), ``backend`` (the
contract and shared helpers), ``attention``, ``output_layer``, ``kv`` (the cache and the store that carries it
between rounds), ``memory`` (batch sizes planned, out-of-memory recognised), ``batching``, ``prefill``, ``decode``,
``graph_decode``, ``engine``; ``vllm`` needs only ``backend`` and ``plan``. Nothing outside a backend touches its
internals.
"""

from .backend import Backend, Completion, cut_at_stops, normalise, pick_device
from .engine import Engine
from .kv import KVStore, new_cache
from .plan import length_groups, prefix_levels
from .vllm import VLLMEngine, load_vllm

__all__ = ["Backend", "Completion", "Engine", "KVStore", "VLLMEngine", "cut_at_stops", "length_groups", "load_vllm", "new_cache",
           "normalise", "pick_device", "prefix_levels"]
