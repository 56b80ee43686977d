"""Live controls: swap on/off, direction a2b/b2a, face boxes, the statistics overlay, quit.

One Controls object is shared by whoever changes it (the window's keys, the web page, the
runner) and whoever obeys it (handlers registered with on_change: the swap stage, the box
overlay). Thread-safe; it runs no thread of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from swapstream.core.errors import ConfigError

ACTIONS = ("swap", "direction", "boxes", "overlay", "quit")
KEYS = {"s": "swap", "d": "direction", "b": "boxes", "o": "overlay", "q": "quit", "\x1b": "quit"}
HELP = "keys: s swap on/off, d direction a2b/b2a, b face boxes, o overlay, q or Esc quit"


class Controls:
    """The live state the user changes. act(name, value=None): None toggles (or, for direction,
    flips); a value must be a bool (swap, boxes, overlay) or "a2b"/"b2a" (direction), else
    ConfigError; returns the new state. Handlers get the whole state after each change."""

    def __init__(self, direction: str = "a2b", swap: bool = True, boxes: bool = False,
                 overlay: bool = True) -> None:
        self._lock = threading.Lock()
        self._state = {"swap": swap, "direction": direction, "boxes": boxes, "overlay": overlay}
        self._handlers: list[Callable[[dict], None]] = []
        self.quit = threading.Event()

    def state(self) -> dict:
        with self._lock:
            return {**self._state, "quit": self.quit.is_set()}

    def on_change(self, handler: Callable[[dict], None]) -> None:
        self._handlers.append(handler)
        handler(self.state())

    def act(self, name: str, value: object = None) -> dict:
        if name not in ACTIONS:
            raise ConfigError(f"unknown control {name!r}; one of {', '.join(ACTIONS)}")
        if name == "quit":
            self.quit.set()
            return self.state()
        with self._lock:
            if name == "direction":
                cur = self._state["direction"]
                new = value if value is not None else ("b2a" if cur == "a2b" else "a2b")
                if not isinstance(new, str) or new not in ("a2b", "b2a"):
                    raise ConfigError(f"direction {new!r} is not a2b or b2a")
            elif value is None:
                new = not self._state[name]
            elif isinstance(value, bool):  # strict: "false" or 0 from a page must not mean on
                new = value
            else:
                raise ConfigError(f"{name} value {value!r} is not true or false (JSON booleans); "
                                  "send true, false, or no value to toggle")
            old, self._state[name] = self._state[name], new
        try:
            for h in self._handlers:
                h(self.state())
        except Exception:
            with self._lock:  # a handler refused (e.g. a model without that decoder): undo
                self._state[name] = old
            raise
        return self.state()

    def key(self, key: str) -> dict | None:
        """Act on a key press ('s', 'd', 'b', 'o', 'q', Esc); None for other keys."""
        name = KEYS.get(key.lower()) if key else None
        return self.act(name) if name else None
