"""aiwatch's locks, made new in a forked child.

A child forked while another thread of the parent holds a lock gets a copy of that lock held for ever: the thread
that would release it does not exist in the child (it has only the thread that forked), so the child deadlocks the
first time it takes the lock. gunicorn forks its workers from a master that may run aiwatch's threads (a GPU poller,
a drift monitor's, a prediction log's writer) and that imported the app (``--preload``), at any time (to replace a
crashed worker). Each module-level lock the request path or the error path can take is made new in the child by a
function given to :func:`at_fork_in_child`, and each object with such a lock is passed to :func:`renew_at_fork`; the
locks stay plain attributes, so taking one costs what it did.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import Protocol


class Renewable(Protocol):
    def _renew_after_fork(self) -> None:
        """Replace the object's locks (and events) with new ones, and drop what is the parent's alone; called in a
        forked child, which has one thread (start no thread here: mark it to start at the child's first use)."""


_owners: weakref.WeakSet[Renewable] = weakref.WeakSet()
_log = logging.getLogger("aiwatch")


def renew_at_fork(owner: Renewable) -> None:
    """Call ``owner._renew_after_fork()`` in every child forked while ``owner`` lives (not holding it alive)."""
    _owners.add(owner)


def at_fork_in_child(renew: Callable[[], None]) -> None:
    """Call ``renew`` in every forked child (where the OS can fork: POSIX)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=renew)


def _renew_owners() -> None:
    for owner in list(_owners):
        try:
            owner._renew_after_fork()
        except Exception as exc:  # the owners after it must still be renewed, or the child may hang on theirs
            _log.warning("aiwatch: %s could not renew its locks in a forked child: %r", type(owner).__name__, exc)


at_fork_in_child(_renew_owners)
