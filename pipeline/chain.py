"""The chain: the face stages between a source and its sinks, as links runners can place.

A Link names a stage, says what it needs (swapstream.stages.base.Needs) and builds it with `build()`, so a
runner (or a Ray actor in another process) builds its own stage objects. The face chain of a
request is made by swapstream.pipeline.request.make_chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from swapstream.stages.base import Needs, Stage


@dataclass(frozen=True)
class Link:
    """One stage of a chain: its name, what it needs, and how to build it (picklable)."""

    name: str
    factory: Callable[[], Stage]
    needs: Needs

    def build(self) -> Stage:
        return self.factory()


Chain = list[Link]


def link(cls: type[Stage], *args, **kwargs) -> Link:
    """A Link for stage class `cls` built with these arguments."""
    return Link(cls.name, partial(cls, *args, **kwargs), cls.needs)


def stage_name(stage: object) -> str:
    """A stage's name ('detect'); objects without one are named after their class."""
    return getattr(stage, "name", None) or type(stage).__name__.removesuffix("Stage").lower()


def after_temporal(chain: Chain) -> int:
    """Index just after the last stage that carries state from frame to frame (where a segment's
    lead frames may leave the chain)."""
    return max((i + 1 for i, lk in enumerate(chain) if lk.needs.temporal), default=0)
