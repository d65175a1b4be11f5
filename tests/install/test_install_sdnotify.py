"""edge_agent.sdnotify against a real AF_UNIX datagram socket, as systemd binds it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge_agent import sdnotify


def _receive(sock: socket.socket) -> str:
    sock.settimeout(5)
    return sock.recv(4096).decode()


@pytest.fixture()
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_every_message_reaches_a_filesystem_socket(path_socket):
    assert sdnotify.ready()
    assert _receive(path_socket) == "READY=1"
    assert sdnotify.watchdog()
    assert _receive(path_socket) == "WATCHDOG=1"
    assert sdnotify.status("streaming\nspool_bytes=0")
    assert _receive(path_socket) == "STATUS=streaming spool_bytes=0"
    assert sdnotify.stopping()
    assert _receive(path_socket) == "STOPPING=1"
    assert sdnotify.notify("READY=1\nSTATUS=up")
    assert _receive(path_socket) == "READY=1\nSTATUS=up"


def test_abstract_namespace_socket(monkeypatch):
    name = f"scribelink-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert _receive(sock) == "READY=1"
    finally:
        sock.close()


def test_without_a_service_manager_calls_are_harmless(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.watchdog() is False  # socket vanished: no exception
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval_s() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert sdnotify.watchdog_interval_s() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval_s() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert sdnotify.watchdog_interval_s() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert sdnotify.watchdog_interval_s() is None


def test_a_separate_process_notifies_like_a_service(tmp_path):
    """The way systemd sees it: a child process with the env systemd would set."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    repo = Path(__file__).resolve().parents[2]
    code = (
        "from edge_agent import sdnotify\n"
        "interval = sdnotify.watchdog_interval_s()\n"
        "assert interval == 20.0, interval\n"
        "sdnotify.ready(); sdnotify.watchdog(); sdnotify.stopping()\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="20000000", PYTHONPATH=str(repo))
    env.pop("WATCHDOG_PID", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    try:
        assert [_receive(sock) for _ in range(3)] == ["READY=1", "WATCHDOG=1", "STOPPING=1"]
    finally:
        sock.close()
