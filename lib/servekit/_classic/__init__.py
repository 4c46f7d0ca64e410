"""The classic ``socketserver`` classes, on servekit's loop and workers.

The public namespace is :mod:`servekit.classic`; this package holds the
real classes (``servers``, ``mixins``, ``handlers``) and their pipeline
(``route``).  Where the classic behaviour is a defect with no documented
purpose the loop does better (``shutdown()`` returns at once, ``shutdown()``
before ``serve_forever()`` neither deadlocks nor poisons the next loop,
``accept()`` failing for lack of resources backs off instead of spinning,
closing the server stops a loop running in another thread, bind errors name
the address, a TLS listener's handshake runs where the request is handled
and not in the serving thread).
"""
