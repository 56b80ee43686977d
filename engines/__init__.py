"""The swap network, its checkpoints, and the engines that run it (eager, compile, onnx,
tensorrt), each declared in swapstream.engines.backends and created by name through the
registry."""

from swapstream.engines.registry import (
    available_engines,
    create_engine,
    engine_status,
    pick_engine,
    register_engine,
)

__all__ = ["available_engines", "create_engine", "engine_status", "pick_engine", "register_engine"]
