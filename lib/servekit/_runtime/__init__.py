"""The running side of servekit: stdlib only, private.

``loop`` (the one serve loop over many sources), ``pipeline`` (the route
of one request of a composed server), ``lifecycle`` (serve, shut down,
close, and what a worker's failure does to them) and ``workers`` (where a
request is handled: inline, a thread, a child process).  Nothing here
imports attrs or logging at module level: ``servekit.classic`` runs on
the same loop and workers.
"""
