"""The sync call aiwatch's client interceptor hands back while the call still runs: the call in every way, except
that dropped by the application it is cancelled, as grpcio cancels its own.

grpcio cancels a call future or response stream its application drops (the call's ``__del__``), unless a done
callback keeps it alive: grpcio's callback list holds the call, and the channel holds that list until the call
ends. aiwatch's own done callback, which records the call, does that; so the call is handed back in a
:class:`HeldCall`, which the application alone holds, and which cancels the call in grpcio's place when it is
collected, unless the application added a done callback of its own (which keeps grpcio's call running too). The
cancelled call ends as grpcio ends it, ``CANCELLED``, and aiwatch's done callback records it so.
"""

from __future__ import annotations

from typing import Any

import grpc


class HeldCall(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A running sync call, cancelled when the application drops it; everything else is the call's own (an
    ``RpcError``, a ``Call`` and a ``Future``, as grpcio's call object is)."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._kept = False

    def __del__(self) -> None:
        try:
            if not self.__dict__.get("_kept", True):
                self._call.cancel()
        except Exception:
            pass

    def __repr__(self) -> str:
        return repr(self._call)

    def __str__(self) -> str:
        return str(self._call)

    def __getattr__(self, name: str) -> Any:  # debug_error_string and anything else the call offers
        if name == "_call":
            raise AttributeError(name)
        return getattr(self._call, name)

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> Any:
        return self._call.code()

    def details(self) -> Any:
        return self._call.details()

    def is_active(self) -> Any:
        return self._call.is_active()

    def time_remaining(self) -> Any:
        return self._call.time_remaining()

    def cancel(self) -> Any:
        return self._call.cancel()

    def add_callback(self, callback: Any) -> Any:
        return self._call.add_callback(callback)

    def cancelled(self) -> Any:
        return self._call.cancelled()

    def running(self) -> Any:
        return self._call.running()

    def done(self) -> Any:
        return self._call.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._call.result(timeout)

    def exception(self, timeout: float | None = None) -> Any:
        return self._call.exception(timeout)

    def traceback(self, timeout: float | None = None) -> Any:
        return self._call.traceback(timeout)

    def add_done_callback(self, fn: Any) -> Any:
        """``fn`` is called with this object, the future the application holds, as grpcio calls it with its own;
        the call then runs to its end even when the application drops this object, as grpcio's does."""
        self._kept = True
        return self._call.add_done_callback(lambda _call: fn(self))


class HeldStream(HeldCall):
    """A held response-streaming call: iterated as grpcio's own, message by message."""

    def __iter__(self) -> HeldStream:
        return self

    def __next__(self) -> Any:
        return next(self._call)

    def next(self) -> Any:
        return self.__next__()
