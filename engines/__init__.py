"""The swap network, its checkpoints, and the backends that run it (eager, compile, TensorRT)."""

from engines.registry import available_engines, create_engine, register_engine

__all__ = ["available_engines", "create_engine", "register_engine"]
