"""A process-wide patch of moto that nested installs share (moto's backends are process-wide: a second
embedded AWS in the same process must not patch twice, and the patch stays until the last one stops)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class SharedPatch:
    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self._apply = apply  # patches, and returns the function that undoes it
        self._lock = threading.Lock()
        self._installs = 0
        self._undo: Callable[[], None] | None = None

    def install(self) -> Callable[[], None]:
        """Applies the patch on the first install; returns this install's undo (idempotent)."""
        with self._lock:
            if self._installs == 0:
                self._undo = self._apply()
            self._installs += 1
        done = False

        def uninstall() -> None:
            nonlocal done
            with self._lock:
                if done:
                    return
                done = True
                self._installs -= 1
                if self._installs == 0 and self._undo is not None:
                    self._undo()
                    self._undo = None

        return uninstall
