"""The standard library's own servers, running on servekit.classic.

Each test is a subprocess that installs ``servekit.classic`` as
``sys.modules["socketserver"]`` before anything imports ``socketserver``, so
``http.server``, ``xmlrpc.server``, ``wsgiref.simple_server`` and
``logging.config`` really build on it; the script proves that through the
MRO, serves one real client and prints ``OK``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: One script: start a server, one client exchange, shut down.
SCRIPT_TIMEOUT = 60.0

PREAMBLE = """
import sys
assert "socketserver" not in sys.modules, "socketserver imported before the substitution"
import servekit.classic
sys.modules["socketserver"] = servekit.classic
import socketserver
import threading

TIMEOUT = 10.0

def on_servekit(server_class):
    assert servekit.classic.BaseServer in server_class.__mro__, server_class.__mro__
    assert all(c.__module__ != "socketserver" for c in server_class.__mro__), server_class.__mro__

def serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread

def stop(server, thread):
    server.shutdown()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    server.server_close()
"""

HTTP_SERVER = """
import http.server
import urllib.request

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from " + type(self.server).__name__).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass

for cls in (http.server.HTTPServer, http.server.ThreadingHTTPServer):
    on_servekit(cls)
    server = cls(("127.0.0.1", 0), Hello)
    thread = serve(server)
    try:
        url = "http://127.0.0.1:%d/" % server.server_address[1]
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            assert response.read() == b"hello from " + cls.__name__.encode()
    finally:
        stop(server, thread)
print("OK")
"""

XMLRPC_SERVER = """
import xmlrpc.client
import xmlrpc.server

on_servekit(xmlrpc.server.SimpleXMLRPCServer)
server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
server.register_function(pow)
server.register_introspection_functions()
thread = serve(server)
try:
    with xmlrpc.client.ServerProxy("http://127.0.0.1:%d/" % server.server_address[1]) as proxy:
        assert proxy.pow(2, 10) == 1024
        assert "pow" in proxy.system.listMethods()
finally:
    stop(server, thread)
print("OK")
"""

WSGIREF_SERVER = """
import http.client
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

class Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass

def app(environ, start_response):
    body = ("you asked for " + environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

on_servekit(WSGIServer)
server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
thread = serve(server)
try:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=TIMEOUT)
    try:
        connection.request("GET", "/probe")
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == b"you asked for /probe"
    finally:
        connection.close()
finally:
    stop(server, thread)
print("OK")
"""

LOGGING_LISTEN = """
import json
import logging
import logging.config
import socket
import struct

listener = logging.config.listen(0)
listener.start()
assert listener.ready.wait(TIMEOUT)
port = listener.port
listener.ready.clear()
# The receiver class is local to listen(): find the live instance.
import gc
receivers = [o for o in gc.get_objects() if type(o).__name__ == "ConfigSocketReceiver"]
assert len(receivers) == 1, receivers
on_servekit(type(receivers[0]))
config = {"version": 1, "incremental": False, "loggers": {"probe": {"level": "DEBUG"}}}
assert logging.getLogger("probe").level != logging.DEBUG
payload = json.dumps(config).encode()
with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
    client.sendall(struct.pack(">L", len(payload)) + payload)
# The receiver sets ready again once it has applied the configuration.
assert listener.ready.wait(TIMEOUT)
logging.config.stopListening()
listener.join(TIMEOUT)
assert not listener.is_alive()
assert logging.getLogger("probe").level == logging.DEBUG
print("OK")
"""

LOGGING_SOCKET_HANDLER = """
import logging
import logging.handlers
import pickle
import struct

records = []
got_all = threading.Event()

class Receiver(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            header = self.rfile.read(4)
            if len(header) < 4:
                return
            (length,) = struct.unpack(">L", header)
            record = logging.makeLogRecord(pickle.loads(self.rfile.read(length)))
            records.append(record.getMessage())
            if len(records) == 3:
                got_all.set()

on_servekit(socketserver.ThreadingTCPServer)
server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Receiver)
thread = serve(server)
try:
    handler = logging.handlers.SocketHandler("127.0.0.1", server.server_address[1])
    logger = logging.getLogger("sender")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for i in range(3):
        logger.info("message %d", i)
    handler.close()
    assert got_all.wait(TIMEOUT)
finally:
    stop(server, thread)
assert records == ["message 0", "message 1", "message 2"], records
print("OK")
"""


def _run(body: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PREAMBLE) + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1:] == ["OK"], proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(HTTP_SERVER, id="http.server"),
        pytest.param(XMLRPC_SERVER, id="xmlrpc.server"),
        pytest.param(WSGIREF_SERVER, id="wsgiref.simple_server"),
        pytest.param(LOGGING_LISTEN, id="logging.config.listen"),
        pytest.param(LOGGING_SOCKET_HANDLER, id="logging.handlers.SocketHandler"),
    ],
)
def test_stdlib_server_on_servekit(body: str) -> None:
    _run(body)
