"""The few typing constructs the classic face needs at run time, without :mod:`typing`.

``import servekit.classic`` must cost what ``import socketserver`` costs,
and :mod:`typing` alone (with the :mod:`re` it loads) takes longer to
import than ``socketserver`` and everything it imports, and is most of the
memory a forking server copies on each request.  The modules that
``servekit.classic`` loads therefore take these names from here: the type
checker sees the real :mod:`typing` objects (the ``TYPE_CHECKING`` branch,
which is all mypy reads), and the interpreter gets small stand-ins that do
at run time what the classes built with them need:

- ``Generic``: a base class whose subclasses can be subscripted
  (``StreamConnection[Address]`` in an annotation evaluated at run time
  gives a :class:`types.GenericAlias`, as a generic builtin does).
- ``TypeVar``: a named placeholder that a :class:`types.GenericAlias`
  substitutes (``Predicate[Address]``).
- ``NamedTuple``: the class syntax of :class:`typing.NamedTuple`, building
  the same :func:`collections.namedtuple` class (fields from the class's
  annotations, defaults from its assignments; methods, docstring and
  annotations kept).
- ``final`` and ``cast``: no-ops, as in :mod:`typing`.

Modules that the classic face does not load (``servekit.abc`` with its
public protocols, the composed API) use :mod:`typing` itself.  Every
annotation in a module using this one is postponed
(``from __future__ import annotations``), so annotations may name anything
the type checker knows; only what runs at import time comes from here.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Generic as Generic
    from typing import NamedTuple as NamedTuple
    from typing import TypeVar as TypeVar
    from typing import cast as cast
    from typing import final as final
else:
    import collections
    import types

    class TypeVar:
        """A type variable's name, substitutable in a :class:`types.GenericAlias`."""

        __slots__ = ("__name__",)

        def __init__(self, name, *constraints, bound=None, covariant=False, contravariant=False):
            self.__name__ = name

        def __typing_subst__(self, argument):
            return argument

        def __repr__(self):
            return f"~{self.__name__}"

    class Generic:
        """A base class that makes its subclasses subscriptable, like ``list[int]``."""

        __slots__ = ()
        __class_getitem__ = classmethod(types.GenericAlias)

    # What a class body holds that namedtuple() sets itself.
    _CLASS_KEYS = frozenset({"__module__", "__qualname__"})

    class _NamedTupleMaker(type):
        """Turns a class body with annotated fields into a :func:`collections.namedtuple` class."""

        def __new__(cls, name, bases, namespace):
            if bases == ():  # the base class itself, below
                return super().__new__(cls, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", {}))
            defaults = [namespace[field] for field in fields if field in namespace]
            made = collections.namedtuple(name, fields, defaults=defaults, module=namespace["__module__"])
            made.__qualname__ = namespace["__qualname__"]
            for key, value in namespace.items():
                if key not in _CLASS_KEYS and key not in fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMaker):
        """Base class of a named tuple declared with the class syntax."""

    def final(thing):
        return thing

    def cast(kind, value):
        return value
