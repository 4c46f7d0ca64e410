"""systemd integration: serve the sockets a service manager passes, and tell it how the service is doing.

Standard library only: nothing here loads libsystemd, and nothing is read or
sent until a function is called.

**Socket activation** (``sd_listen_fds(3)``).  A service manager (systemd
for a ``.socket`` unit, ``systemd-socket-activate`` on a command line)
makes the listening sockets itself and starts the service with them open
from fd 3 (:data:`LISTEN_FDS_START`) on, announced by three environment
variables: ``LISTEN_PID`` (the process they are meant for), ``LISTEN_FDS``
(how many) and ``LISTEN_FDNAMES`` (their names, colon-separated: a socket
unit's ``FileDescriptorName=``, by default the unit's name).
:func:`listeners` reads them once; :func:`socket` makes a servekit
transport of one of the sockets (:func:`servekit.adopt`), by index or by
name::

    # echo.socket: [Socket] ListenStream=8000, FileDescriptorName=web
    # echo.service: [Service] Type=notify, ExecStart=/usr/bin/python echo.py
    from servekit import run, server, systemd, tcp

    transport = systemd.socket("web", "tcp") if systemd.listeners() else tcp("127.0.0.1", 8000)
    run(server(transport, echo), ready=lambda bound: systemd.ready())

**Notification** (``sd_notify(3)``).  A ``Type=notify`` service tells the
manager it has started (:func:`ready`), is stopping (:func:`stopping`), what
it is doing (:func:`status`) and that it is alive (:func:`watchdog`, at the
interval :func:`watchdog_interval` reads), each a datagram to the Unix
socket ``NOTIFY_SOCKET`` names.  Without that variable (not run by a
manager, or not ``Type=notify``) they do nothing and return ``False``, so a
program calls them unconditionally.
"""

from __future__ import annotations

import os
import socket as _socket  # (this module's own socket() is the one that adopts)
import threading
from typing import Final, Literal, TypeAlias, final, overload

import attrs

from ._types import Address, IPAddress, UnixAddress
from ._validate import check_text
from .connections import Datagram, StreamConnection
from .transports import AdoptedTransport, AdoptKind, _Adopted

__all__ = (
    "LISTEN_FDS_START",
    "ListenFD",
    "listeners",
    "notify",
    "ready",
    "socket",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
)

LISTEN_FDS_START: Final = 3
"""The fd of the first socket a service manager passes; the others follow without gaps (``SD_LISTEN_FDS_START``)."""

#: The variables of socket activation, unset at the first read.  LISTEN_PIDFDID
#: (newer systemd sets it beside LISTEN_PID, to tell a reused pid apart) goes
#: with them, unread: comparing it needs the process's pidfd inode, which the
#: standard library cannot tell from an older kernel's shared one.
_LISTEN_VARIABLES: Final = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")

#: The name of every fd when the manager names none (as sd_listen_fds_with_names).
_UNNAMED: Final = "unknown"

#: The largest value of the variables that hold a C int (a pid, a count of fds).
_INT_MAX: Final = 2**31 - 1

#: How long a notification may wait for room in the manager's queue, in seconds.
_SEND_TIMEOUT: Final = 5.0


@final
@attrs.frozen
class ListenFD:
    """One socket the service manager passed: its fd and its name; :func:`listeners` lists them.

    Attributes:
        fd: the file descriptor: :data:`LISTEN_FDS_START` (3) for the first,
            one more for each next.  It stays open, close-on-exec, for the
            life of the process.
        name: its name in ``LISTEN_FDNAMES`` (a socket unit's
            ``FileDescriptorName=``, ``systemd-socket-activate --fdname``),
            or ``"unknown"`` when the manager passed no names.  Names need
            not be unique: every socket of one unit has that unit's name by
            default.
    """

    fd: int
    name: str


# What the first listeners() call found, for the life of the process: the fds
# and, when there are none, why (for messages); or the error it raised.
_lock: Final = threading.Lock()
_found: tuple[tuple[ListenFD, ...], str] | ValueError | OSError | None = None


def _number(variable: str, value: str, high: int) -> int:
    """*value*, the text of *variable*, as a whole number from 1 to *high*; else a ValueError naming both."""
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= high:
        raise ValueError(f"{variable} must be a whole number from 1 to {high}, got {value!r}")
    return int(value)


def _take_from_environment() -> tuple[tuple[ListenFD, ...], str]:
    """Take the activation variables out of the environment: the fds they pass, and why none if none.

    The variables are unset whatever they hold, as ``sd_listen_fds(1)`` does:
    fds meant for this process are its own to hand on, and variables meant
    for another (a parent that did not unset them) mean nothing to children.

    Raises:
        ValueError: a variable is malformed, or names more or fewer fds than it passes.
        OSError: an fd it passes is not open.
    """
    values = {name: os.environ.pop(name, None) for name in _LISTEN_VARIABLES}
    pid_text, count_text, names_text = values["LISTEN_PID"], values["LISTEN_FDS"], values["LISTEN_FDNAMES"]
    if pid_text is None:
        return (), "LISTEN_PID is not set"
    if _number("LISTEN_PID", pid_text, _INT_MAX) != os.getpid():
        return (), f"LISTEN_PID={pid_text} is another process's; this is {os.getpid()}"
    if count_text is None:
        return (), "LISTEN_FDS is not set"
    count = _number("LISTEN_FDS", count_text, _INT_MAX - LISTEN_FDS_START)
    if names_text is None:
        names = [_UNNAMED] * count
    else:
        names = names_text.split(":")  # empty names stay: "a::b" names three fds
        if len(names) != count:
            raise ValueError(
                f"LISTEN_FDNAMES={names_text!r} names {len(names)} fd(s), but LISTEN_FDS={count_text} passes {count}"
            )
    passed = tuple(ListenFD(LISTEN_FDS_START + index, name) for index, name in enumerate(names))
    for listen_fd in passed:
        try:
            # Close-on-exec: a program the service runs does not inherit its listening sockets.
            os.set_inheritable(listen_fd.fd, False)
        except OSError as exc:
            raise _os_error(exc, f"LISTEN_FDS={count_text} passes fd {listen_fd.fd}") from exc
    return passed, ""


def _received() -> tuple[tuple[ListenFD, ...], str]:
    """The fds passed (and why none), read from the environment at the first call of the process."""
    global _found
    with _lock:
        if _found is None:
            try:
                _found = _take_from_environment()
            except (ValueError, OSError) as exc:
                _found = exc
        found = _found
    if isinstance(found, (ValueError, OSError)):
        # The same error at every call (the variables are gone), each time a new one.
        raise type(found)(*found.args)
    return found


def listeners() -> tuple[ListenFD, ...]:
    """The sockets the service manager passed to this process, in order; ``()`` if none.

    The first call reads ``LISTEN_PID``, ``LISTEN_FDS`` and
    ``LISTEN_FDNAMES`` (see the module's docstring): the fds count only when
    ``LISTEN_PID`` is this process's id, they start at
    :data:`LISTEN_FDS_START`, and each is named by ``LISTEN_FDNAMES`` or
    ``"unknown"`` without it.  It then marks the fds close-on-exec and unsets
    the variables (also when they were meant for another process), so
    programs the service starts inherit neither; and it remembers what it
    found: every later call returns the same tuple.  A child made with
    ``os.fork()`` remembers it too (the fork copied the fds as well), so
    pre-forked workers can adopt them; a program started with ``exec`` does
    not.  Thread-safe.

    Raises:
        ValueError: a variable is malformed (it names it and shows the
            value), or ``LISTEN_FDNAMES`` names more or fewer fds than
            ``LISTEN_FDS`` passes (an error in ``sd_listen_fds_with_names(3)``
            too).  Raised again by every later call.
        OSError: an fd ``LISTEN_FDS`` passes is not open.  Raised again by
            every later call.
    """
    return _received()[0]


def _passed(found: tuple[ListenFD, ...]) -> str:
    """The fds passed, for messages: ``"0: 'web' (fd 3), 1: 'api' (fd 4)"``."""
    return ", ".join(f"{index}: {listen_fd.name!r} (fd {listen_fd.fd})" for index, listen_fd in enumerate(found))


def _choose(which: int | str) -> tuple[int, ListenFD]:
    """The index and fd :func:`socket` is asked for: *which* is an index or a name."""
    if isinstance(which, bool) or not isinstance(which, (int, str)):
        raise TypeError(f"which must be an index (an int) or a name (a str), got {type(which).__name__} {which!r}")
    found, why = _received()
    if not found:
        raise LookupError(f"no socket {which!r}: no sockets were passed ({why})")
    if isinstance(which, int):
        if not 0 <= which < len(found):
            raise IndexError(
                f"no socket {which}: the index must be from 0 to {len(found) - 1}; passed: {_passed(found)}"
            )
        return which, found[which]
    named = [index for index, listen_fd in enumerate(found) if listen_fd.name == which]
    if not named:
        raise LookupError(f"no socket named {which!r}; passed: {_passed(found)}")
    if len(named) > 1:
        indexes = ", ".join(map(str, named))
        raise LookupError(
            f"{len(named)} sockets are named {which!r} (indexes {indexes}): choose one by index; "
            f"passed: {_passed(found)}"
        )
    return named[0], found[named[0]]




@overload
def socket(which: int | str, kind: Literal["tcp"]) -> AdoptedTransport[StreamConnection[IPAddress], IPAddress]: ...
@overload
def socket(
    which: int | str, kind: Literal["unix_stream"]
) -> AdoptedTransport[StreamConnection[UnixAddress], UnixAddress]: ...
@overload
def socket(which: int | str, kind: Literal["stream"]) -> AdoptedTransport[StreamConnection[Address], Address]: ...
@overload
def socket(
    which: int | str, kind: Literal["udp"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[IPAddress], IPAddress]: ...
@overload
def socket(
    which: int | str, kind: Literal["unix_datagram"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[UnixAddress], UnixAddress]: ...
@overload
def socket(
    which: int | str, kind: Literal["datagram"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[Address], Address]: ...
# A kind known only at run time.  (No max_packet_size here: it would let a literal stream kind take one.)
@overload
def socket(
    which: int | str, kind: AdoptKind
) -> AdoptedTransport[StreamConnection[Address] | Datagram[Address], Address]: ...
def socket(which: int | str, kind: AdoptKind, *, max_packet_size: int | None = None) -> _Adopted:
    """A transport over a socket the service manager passed: ``socket(which, kind, *, max_packet_size=8192)``.

    *which* is the socket's index among :func:`listeners` (``0`` is fd 3)
    or its name there (``FileDescriptorName=``); *kind* and
    *max_packet_size* are :func:`servekit.adopt`'s, and decide the request
    and address types the same way.  The transport is ``adopt(fd, kind)``:
    servekit serves a duplicate of the fd, which stays open, so the same
    socket may be adopted again (a server bound twice, pre-forked workers).

    Unlike :func:`servekit.adopt`, which checks at ``bind()``, the socket is
    checked at once: a unit that passes the wrong sort of socket fails when
    the program starts, with adopt's message and a note naming the socket.

    Raises:
        TypeError: *which* is neither an int nor a str; or, from adopt, a bad
            *kind* or *max_packet_size*.
        LookupError: no sockets were passed (the message says why:
            ``LISTEN_PID`` unset, or another process's), no socket has the
            name, or several have it (choose by index then); the message
            lists the sockets there are.
        IndexError: (a :class:`LookupError`) the index is out of range.
        ValueError: the socket does not fit *kind* (adopt's message: the fd,
            the kind and what the socket is), or a bad *kind* or
            *max_packet_size*; or :func:`listeners` found malformed variables.
        OSError: the fd is no longer open, or is no socket
            (:class:`servekit.BindError`); or :func:`listeners` found an fd
            that is not open.
    """
    index, chosen = _choose(which)
    transport: AdoptedTransport[StreamConnection[Address] | Datagram[Address], Address]
    if max_packet_size is None:  # the kind's default
        transport = AdoptedTransport(chosen.fd, kind)
    else:
        transport = AdoptedTransport(chosen.fd, kind, max_packet_size=max_packet_size)
    try:
        transport.listen().close()  # the check bind() makes, on a duplicate
    except (ValueError, OSError) as exc:
        exc.add_note(f"(fd {chosen.fd} is socket {index} the service manager passed, named {chosen.name!r})")
        raise
    return transport


def _os_error(original: OSError, message: str) -> OSError:
    """An OSError with *message* and *original*'s errno, so of the same subclass (FileNotFoundError, ...)."""
    reason = original.strerror or str(original)
    if original.errno is None:
        return OSError(f"{message}: {reason}")
    return OSError(original.errno, f"{message}: {reason}")


def _notify_address(where: str) -> str:
    """The socket address ``NOTIFY_SOCKET=where`` names: a path, or ``"@name"``'s abstract name."""
    if where.startswith("/"):
        return where
    if where.startswith("@") and len(where) > 1:
        return "\0" + where[1:]
    if where.startswith("vsock:"):
        raise ValueError(f"NOTIFY_SOCKET={where!r} is an AF_VSOCK address: only Unix sockets are supported")
    raise ValueError(f"NOTIFY_SOCKET must be an absolute path or an abstract name starting with '@', got {where!r}")


def _message(assignments: tuple[str, ...]) -> bytes:
    """The datagram of :func:`notify`: the assignments, one a line; checked."""
    if not assignments:
        raise TypeError("notify() takes at least one assignment, such as 'READY=1'")
    for assignment in assignments:
        check_text("assignment", assignment)
        if "\0" in assignment:
            raise ValueError(f"an assignment must not contain NUL, got {assignment!r}")
        for line in assignment.split("\n"):
            name, equals, _ = line.partition("=")
            if not (name and equals):
                raise ValueError(f"each line of a notification must be NAME=VALUE, got {line!r} in {assignment!r}")
    return "\n".join(assignments).encode()


def notify(*assignments: str) -> bool:
    """Send the service manager *assignments* in one datagram; whether there was a manager to send them to.

    Each assignment is ``NAME=VALUE`` (``"READY=1"``, ``"STATUS=warming up"``,
    ``"EXTEND_TIMEOUT_USEC=5000000"``; ``sd_notify(3)`` lists them), or
    several such lines in one string; they are sent as lines of one
    message, UTF-8, to the Unix datagram socket ``NOTIFY_SOCKET`` names: a
    path, or an abstract name written ``@name``.

    Returns ``False``, sending nothing, when ``NOTIFY_SOCKET`` is unset or
    empty (not run by a manager, or not ``Type=notify``); ``True`` once the
    datagram is sent.  A variable that is set but leads nowhere is an error,
    not ``False``: the manager that set it is waiting for the message, and
    a service that believes it announced itself when it did not is what the
    error prevents (catch :class:`OSError` to carry on regardless).  A
    manager accepts messages from the main process only, unless the unit
    says ``NotifyAccess=all``.

    Raises:
        TypeError: no assignments, or one that is not a str.
        ValueError: a line that is not ``NAME=VALUE``, a NUL, or a
            ``NOTIFY_SOCKET`` that is neither a path nor ``@name``.
        OSError: the socket cannot be reached: gone
            (:class:`FileNotFoundError`), nobody bound to it
            (:class:`ConnectionRefusedError`), ...; its message names
            ``NOTIFY_SOCKET``.  :class:`TimeoutError` if the manager's queue
            stays full for 5 s.
    """
    message = _message(assignments)
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return False
    address = _notify_address(where)
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM) as sock:
        # Connected, a full queue makes the send wait (bounded) rather than fail at once.
        sock.settimeout(_SEND_TIMEOUT)
        try:
            sock.connect(address)
            sock.send(message)
        except TimeoutError as exc:
            raise TimeoutError(
                f"cannot notify NOTIFY_SOCKET={where!r}: its queue stayed full for {_SEND_TIMEOUT} s"
            ) from exc
        except OSError as exc:
            raise _os_error(exc, f"cannot notify NOTIFY_SOCKET={where!r}") from exc
    return True


def ready() -> bool:
    """``READY=1``: start-up is finished (a ``Type=notify`` service is "started" from now); see :func:`notify`."""
    return notify("READY=1")


def stopping() -> bool:
    """``STOPPING=1``: the service is shutting down; see :func:`notify`."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """``STATUS=text``: one line for ``systemctl status`` to show; see :func:`notify`.

    Raises:
        TypeError: *text* is not a str.
        ValueError: *text* has a newline (it would end the assignment).
    """
    check_text("text", text)
    if "\n" in text:
        raise ValueError(f"a status is one line, got {text!r}")
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    """``WATCHDOG=1``: the service is alive; send it more often than :func:`watchdog_interval`.  See :func:`notify`."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The manager's watchdog interval in seconds (``WatchdogSec=``); ``None`` without a watchdog.

    Read from ``WATCHDOG_USEC`` at each call, in microseconds; ``None`` also
    when ``WATCHDOG_PID`` is set to another process's id (the variables were
    inherited).  A service that has a watchdog calls :func:`watchdog` at
    less than this interval (half of it is the usual choice), or the manager
    deems it hung.  The variables are left as they are.

    Raises:
        ValueError: ``WATCHDOG_USEC`` or ``WATCHDOG_PID`` is not a whole
            number in range (the message names it and shows the value).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if usec is None:
        return None
    # Zero and 2**64 - 1 ("infinity") are not intervals: malformed, as sd_watchdog_enabled(3) says.
    interval = _number("WATCHDOG_USEC", usec, 2**64 - 2)
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and _number("WATCHDOG_PID", pid, _INT_MAX) != os.getpid():
        return None
    return interval / 1_000_000
