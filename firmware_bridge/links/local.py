"""Links on this machine: serial ports (pyserial), pty pairs and pyserial's in-memory loop."""

from __future__ import annotations

import contextlib
import os
import termios
import tty

import serial

from firmware_bridge.errors import LinkError
from firmware_bridge.links.base import DEFAULT_TX_BUFFER_BYTES, FdLink, Link


class PtyLink(FdLink):
    """The master side of a fresh pty pair in raw mode; a peer opens ``device_path`` as ``serial://``."""

    device_path: str
    """The slave device (``/dev/pts/N``) a peer opens."""

    def __init__(self, url: str = "pty://", tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES) -> None:
        super().__init__(url, tx_buffer_bytes)
        master, slave = os.openpty()
        # Raw on both ends: no echo, no CR/LF translation, no ^C/^S interpretation of binary frames.
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._fd = master
        # We keep our own slave descriptor open so that reads on the master do not fail with EIO
        # before the peer has opened the device or between its reconnects.
        self._slave_fd = slave
        self.device_path = os.ttyname(slave)

    def close_peer_side(self) -> None:
        """Close our hold on the slave: from now on the master sees EIO once the peer closes too."""
        if self._slave_fd >= 0:
            os.close(self._slave_fd)
            self._slave_fd = -1

    def _close_raw(self) -> None:
        os.close(self._fd)
        self.close_peer_side()

    def __repr__(self) -> str:
        return f"PtyLink(device_path={self.device_path!r}, open={self._open})"


class SerialLink(FdLink):
    """A serial device (or pty slave) opened with pyserial, read and written through its descriptor."""

    def __init__(
        self, url: str, port: str, baud: int, tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES
    ) -> None:
        super().__init__(url, tx_buffer_bytes)
        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._open = False
            raise LinkError(f"{url}: cannot open {port} at {baud} baud: {exc}") from exc
        # pyserial configures the port (raw 8N1, baud); the hot path uses the descriptor directly:
        # one syscall per chunk, and pyserial's own non-blocking write spins on EAGAIN.
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        # pyserial sets VMIN=0 for timeout=0, where "no data" and "hung up" both read as b"".
        # With VMIN=1 an empty non-blocking read is EAGAIN, so b"" (or EIO) really means gone.
        attrs = termios.tcgetattr(self._fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)

    def _close_raw(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self._serial.close()


class LoopLink(Link):
    """pyserial's in-memory ``loop://``: what is written is read back. For tests."""

    def __init__(self, url: str = "loop://", tx_buffer_bytes: int = DEFAULT_TX_BUFFER_BYTES) -> None:
        super().__init__(url, tx_buffer_bytes)
        # write_timeout=None: pyserial's loop refuses any write "slower" than a zero timeout at its
        # baud; we never block anyway because _send only writes what fits in the queue.
        self._serial = serial.serial_for_url(url, timeout=0, write_timeout=None)
        # loop:// has no descriptor; a self-pipe gives select() one that is readable while data waits.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def fileno(self) -> int:
        """A pipe that is readable while loopback data waits."""
        return self._wake_r

    def _read_raw(self, max_bytes: int) -> bytes:
        waiting = self._serial.in_waiting
        data = bytes(self._serial.read(min(waiting, max_bytes))) if waiting else b""
        if self._serial.in_waiting == 0:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        return data

    def _send(self, data: bytes | bytearray | memoryview) -> int:
        room = self._serial.buffer_size - self._serial.in_waiting
        n = min(room, len(data))
        if n <= 0:
            return 0
        self._serial.write(bytes(data[:n]))
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\x01")
        return n

    def _close_raw(self) -> None:
        self._serial.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
