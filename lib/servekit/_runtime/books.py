"""A composed server's books: the requests it holds, and the counters behind ``stats()``.

The route (:mod:`.pipeline`) writes them at two points, in its own code
(each is once per request, where a call more would show): when a request is
taken (on the loop's thread: :attr:`Books.live`, :attr:`Books.taken`) and when
it ends (its ``end()``, on whatever thread ended it: the handler's time and
errors, the failed stages, the unhandled, the per-peer count, then the live
entry, last).  ``stats()``, ``connections()`` and a drain read them from any
thread.

The counters of the loop's thread need no lock.  Those a request's end
writes are kept under :attr:`Books.lock` -- taken once per end -- unless
every request ends on the loop's thread (inline workers declare it), when
:attr:`Books.shared` is ``None`` and no lock is taken at all.  The closed and
handled totals are derived (taken - live, closed - unhandled), so an end
writes as little as it can; the live entry goes last, so that a request is
never counted closed before its counts are in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, final

from ..abc import Request
from ..events import Connection, Stats

__all__ = ("Books",)

_ReqT = TypeVar("_ReqT", bound=Request[object])
_WhereT = TypeVar("_WhereT")


@final
class Books(Generic[_ReqT, _WhereT]):
    """The live requests and the counters of one composed server (*W*: what says where a request came from)."""

    __slots__ = (
        "_closed_seen",
        "_handled_seen",
        "accept_errors",
        "cut_now",
        "cut_total",
        "draining",
        "gated_out",
        "handler_errors",
        "handler_seconds",
        "idle",
        "live",
        "lock",
        "peer_left",
        "rejected",
        "shared",
        "closed_reasons",
        "stage_errors",
        "taken",
        "unhandled",
    )

    def __init__(self) -> None:
        #: id(request) -> (request, when it was taken, where it came from) of
        #: every request taken and not yet ended.
        self.live: dict[int, tuple[_ReqT, float, _WhereT]] = {}
        # Counted on the loop's thread only: requests taken (admitted), refused
        # (per reason), closed at the gate, failed accept() calls.
        self.taken = 0
        self.rejected: dict[str, int] = {}
        self.gated_out = 0
        self.accept_errors = 0
        #: Guards what an end writes, and the admission's per-peer counts.
        self.lock = threading.Lock()
        #: The same lock while more than one thread may end requests, else None.
        self.shared: threading.Lock | None = self.lock
        #: Called (under the lock) with each request that ends, when per-peer limits count them.
        self.peer_left: Callable[[_ReqT], None] | None = None
        # Written at each end: requests that ended with no handler run, the
        # handlers' time and errors, the stages that failed (by name), and the
        # requests a drain cut.
        self.unhandled = 0
        self.handler_seconds = 0.0
        self.handler_errors = 0
        self.stage_errors: dict[str, int] = {}
        self.closed_reasons: dict[str, int] = {}  # reason -> count, for every reason but "finished"
        self.cut_total = 0
        # High-water marks of the derived totals, so that stats() never goes back.
        self._closed_seen = self._handled_seen = 0
        #: While draining: set when no request is left (by the end of the last one).
        self.draining = False
        self.idle = threading.Event()
        #: Set by :meth:`cut`: :meth:`wait_idle` waits no more.
        self.cut_now = False

    # -- draining -----------------------------------------------------------------

    def start_draining(self) -> None:
        """From now on, :meth:`wait_idle` returns when the last request has ended."""
        # No lock: wait_idle looks at the live set again after every wake-up.
        self.draining = True
        if not self.live:
            self.idle.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds until no request is left, or :meth:`cut` is called; whether none is left."""
        deadline = time.monotonic() + timeout
        idle = self.idle
        while self.live and not self.cut_now:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Set by whoever ended the last request (or by cut); looked at
            # again, as a request may have been taken since.
            idle.wait(left)
            idle.clear()
        return not self.live

    def cut(self) -> None:
        """From any thread: a :meth:`wait_idle` under way returns now, and one to come at once."""
        self.cut_now = True
        self.idle.set()

    # -- what the handle shows ----------------------------------------------------------

    def connections(self, held: set[int]) -> list[Connection[object]]:
        """The requests taken and not yet ended: peer, age, state (*held*: the ids of those on the loop)."""
        now = time.monotonic()
        return [
            Connection(request.client_address, now - since, "parked" if key in held else "running")
            for key, (request, since, _) in list(self.live.items())
        ]

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self.lock:
            seconds, errors, cut = self.handler_seconds, self.handler_errors, self.cut_total
            stages = dict(self.stage_errors)
            reasons = dict(self.closed_reasons)
            # Read while the loop's thread and the workers go on: a request
            # is live before it is counted taken, and counted unhandled before
            # it is no longer live, so these can only lag, by a request or two;
            # the high-water marks keep the totals from going back.
            closed = max(self._closed_seen, self.taken - len(self.live))
            handled = max(self._handled_seen, closed - self.unhandled)
            self._closed_seen, self._handled_seen = closed, handled
        rejected = dict(self.rejected)
        return Stats(
            connections_accepted_total=self.taken,
            connections_rejected_total=sum(rejected.values()),
            rejected_by_reason=rejected,
            connections_active=len(self.live),
            connections_closed_total=closed,
            connections_gate_closed_total=self.gated_out,
            connections_cut_total=cut,
            accept_errors_total=self.accept_errors,
            handler_duration_seconds_count=handled,
            handler_duration_seconds_sum=seconds,
            handler_errors_total=errors,
            stage_errors_total=sum(stages.values()),
            stage_errors_by_stage=stages,
            closed_by_reason=reasons,
        )
