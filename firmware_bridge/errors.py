"""Bridge exceptions. ``BridgeError`` is re-parented under ``EdgeAgentError`` by nothing:
the bridge imports nothing of ours, so ``edge_agent.errors`` derives from these instead."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the firmware bridge raises."""


class LinkError(BridgeError):
    """A link could not be opened, or failed in a way reconnecting cannot fix."""


class LinkUrlError(LinkError, ValueError):
    """A link URL is malformed or names an unsupported scheme."""


class LinkDownError(LinkError):
    """The peer vanished (pty master closed, TCP reset, serial unplugged); reconnecting may fix it."""


class CommandError(BridgeError):
    """A command was denied by the autopilot or went unanswered after all retries."""

    def __init__(self, message: str, *, command: int, result: int | None) -> None:
        super().__init__(message)
        self.command = command
        self.result = result
        """MAV_RESULT of the last ACK, or None when no ACK ever came."""


class ProtocolError(BridgeError):
    """A peer broke the protocol (bad handshake, unsupported version)."""
