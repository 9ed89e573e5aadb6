"""A private network namespace with loopback alone, for firmware that binds every interface.

The real PX4 and ArduPilot SITL builds bind ``0.0.0.0`` and have no option to change that, so
they must never run on the host's network. :class:`NetNamespace` makes a namespace whose one
interface is ``lo`` (a small holder process created with ``unshare --net``), starts programs in
it (``nsenter --net``) and opens sockets in it from this process (``setns`` on the calling thread
only, then back), so a test can talk to the firmware without leaving the namespace. Closing it
kills every process it started, process group and all, then the holder: the namespace goes
away with its last process, and with it every port the firmware bound.

Needs root (or CAP_SYS_ADMIN) and util-linux's ``unshare``/``nsenter``; :func:`available` says
whether this machine can, and why not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

_CLONE_NEWNET = 0x40000000
_setns_lock = threading.Lock()


class NamespaceError(RuntimeError):
    """A private network namespace cannot be made here; the message says why and what to do."""


def available() -> str | None:
    """None when namespaces can be made here, else the reason (one line)."""
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (util-linux / iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (unshare --net); run as root or in CI"
    try:
        probe = subprocess.run(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo ok"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net failed: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        return f"unshare --net failed: {probe.stderr.strip() or probe.returncode}"
    return None


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns failed: {os.strerror(err)}")


class NetNamespace:
    """A loopback-only network namespace; a context manager that leaves nothing behind."""

    def __init__(self) -> None:
        why = available()
        if why is not None:
            raise NamespaceError(f"cannot make a private network namespace: {why}")
        self._holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo ready && exec sleep 2147483647"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().strip()
        if line != "ready":
            self._holder.kill()
            self._holder.wait()
            raise NamespaceError("the namespace holder did not start (unshare --net / ip link set lo up)")
        self.path = f"/proc/{self._holder.pid}/ns/net"
        self._procs: list[subprocess.Popen[Any]] = []

    @property
    def pid(self) -> int:
        """The holder's pid: ``nsenter --net=/proc/PID/ns/net CMD`` joins the namespace."""
        return self._holder.pid

    def join_hint(self, command: str = "<command>") -> str:
        """The shell line a user types to run a client inside this namespace."""
        return f"nsenter --net={self.path} {command}"

    def popen(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        text: bool = False,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace, in its own process group (killed on close);
        ``text``: its pipes are line-buffered text."""
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.path}", *argv],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            start_new_session=True,
            text=text,
            bufsize=1 if text else -1,
        )
        self._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with the calling thread inside the namespace (sockets made there stay there).

        Only this thread moves, and only for the body: create sockets inside, use them anywhere.
        """
        with _setns_lock:
            own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
            target = os.open(self.path, os.O_RDONLY)
            try:
                _libc_setns(target)
                try:
                    yield
                finally:
                    _libc_setns(own)
            finally:
                os.close(target)
                os.close(own)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket that lives in the namespace."""
        with self.entered():
            return socket.socket(family, kind)

    def stop(self, proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after ``timeout_s``; its return code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever the group left (a forked helper) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def close(self) -> None:
        """Stop every process started here, then the holder; the namespace dies with it."""
        for proc in reversed(self._procs):
            self.stop(proc)
        self._procs.clear()
        if self._holder.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._holder.pid, signal.SIGKILL)
            self._holder.wait()
        if self._holder.stdout is not None:
            self._holder.stdout.close()
        deadline = time.monotonic() + 2.0
        while Path(self.path).exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
