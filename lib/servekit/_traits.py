"""``WorkerTraits``, what a kind of workers declares (public in :mod:`servekit.abc`).

A module of its own so that the built-in workers, which ``servekit.classic``
runs on too, declare theirs without loading :mod:`typing` (see
:mod:`servekit._lite`).
"""

from __future__ import annotations

from ._lite import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .abc import RunsIn

__all__ = ("WorkerTraits",)


class WorkerTraits(NamedTuple):
    """What a kind of workers is, declared by its :class:`Workers` as a ``traits`` attribute.

    Declaring is optional and only ever makes serving cheaper: a server
    whose workers declare nothing assumes the most it must (any thread may
    end a request, a child process may run it, capacity and service actions
    are asked for) and books every request right.  Declare only what is
    true of every request the workers get.

    Attributes:
        runs_in: where ``run`` is called (:data:`RunsIn`).  ``"loop"`` lets
            the server keep its books without a lock; ``"loop"`` and
            ``"threads"`` let it skip the report pipe its children use.
        capacity: whether :meth:`Workers.capacity` can ever say "full"
            (``False``: the loop never asks).
        service: whether :meth:`Workers.service_actions` does anything
            (``False``: the loop never calls it).
        accepts_per_wakeup: how many connections the loop takes off a
            listener per wake-up for these workers, at most (while they have
            room), an int >= 1: more saves a wait per connection in a burst,
            for workers whose ``dispatch`` costs little.  ``1`` for the
            built-in dispatchers, ``32`` for the reactor.
    """

    runs_in: RunsIn
    capacity: bool = True
    service: bool = True
    accepts_per_wakeup: int = 1


WorkerTraits.__module__ = "servekit.abc"  # where it is public (and pickled from)
