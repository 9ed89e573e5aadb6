"""Byte links opened from URLs: serial, UDP, TCP, pty pairs and pyserial's loop.

Every link is non-blocking: ``read`` returns what is waiting (``b""`` when nothing is) in one
large chunk, ``write`` hands bytes to the OS and keeps what the OS cannot take yet in a bounded
transmit buffer (overflow is dropped and counted, never blocks the control loop). A peer that
vanishes (pty master closed, TCP reset or close, serial unplugged) raises
:class:`~firmware_bridge.errors.LinkDownError` from ``read``/``write``; :class:`ReconnectingLink`
turns that into link-down/link-up events and reconnects with exponential backoff.

URLs (the pymavlink/MAVProxy, MAVSDK and MAVROS forms are accepted too; :data:`URL_FORMS` and
docs/bridge.md list them all)::

    serial:///dev/ttyACM0?baud=921600   pyserial, raw 8N1 (baud defaults to 115200);
                                         also serial:///dev/ttyACM0:57600, /dev/ttyUSB0,57600
    udpin://0.0.0.0:14540                listen; locks onto the autopilot first heard
    udp://:14540, udp:HOST:PORT          listen too (MAVSDK's and pymavlink's meaning)
    udpout://127.0.0.1:14540             send to; also receives whatever comes back
    tcp://127.0.0.1:5760?connect_timeout=2   client
    tcpin://0.0.0.0:5760                 server, one client at a time
    pty://                               a fresh pty pair; the master is the link,
                                         ``.device_path`` is the slave a peer opens
    loop://                              pyserial's in-memory loopback

IPv6 hosts go in brackets: ``udpin://[::1]:14540``.

The modules, one concern each: :mod:`~firmware_bridge.links.base` (the :class:`Link` contract),
:mod:`~firmware_bridge.links.local` (serial, pty, loop), :mod:`~firmware_bridge.links.net` (UDP,
TCP), :mod:`~firmware_bridge.links.url` (URL forms and :func:`open_link`) and
:mod:`~firmware_bridge.links.reconnect` (:class:`ReconnectingLink`). Import from here.
"""

from __future__ import annotations

from firmware_bridge.links.base import (
    DEFAULT_READ_BYTES,
    DEFAULT_SERIAL_BAUD,
    DEFAULT_TCP_CONNECT_TIMEOUT_S,
    DEFAULT_TX_BUFFER_BYTES,
    Link,
)
from firmware_bridge.links.local import LoopLink, PtyLink, SerialLink
from firmware_bridge.links.net import TcpLink, TcpServerLink, UdpLink, port_holder
from firmware_bridge.links.reconnect import LinkEvent, LinkEventKind, ReconnectingLink
from firmware_bridge.links.url import URL_FORMS, LinkUrl, accepted_forms, open_link, parse_link_url

__all__ = [
    "DEFAULT_READ_BYTES",
    "DEFAULT_SERIAL_BAUD",
    "DEFAULT_TCP_CONNECT_TIMEOUT_S",
    "DEFAULT_TX_BUFFER_BYTES",
    "URL_FORMS",
    "Link",
    "LinkEvent",
    "LinkEventKind",
    "LinkUrl",
    "LoopLink",
    "PtyLink",
    "ReconnectingLink",
    "SerialLink",
    "TcpLink",
    "TcpServerLink",
    "UdpLink",
    "accepted_forms",
    "open_link",
    "parse_link_url",
    "port_holder",
]
