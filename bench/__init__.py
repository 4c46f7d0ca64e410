"""servekit's benchmark harness: ``python -m bench`` (see bench/README.md).

servers   the registry: one entry per server compared (_aio: its asyncio servers)
serve     the server process the harness starts for each cell
loadgen.c the load generator and the trivial server of its ceiling (C)
pyloadgen the generator's Python fallback, for machines without ``cc``
generator compiling and running either generator
procs     child processes: deadlines, /proc memory and CPU, clean stops
harness   running the cells; report: the table, ratios, JSON and chart
"""
