"""The exit statuses of every ``edge-agent`` command: one table, distinct codes (docs/safety.md).

It lives in ``firmware_bridge`` because that is the one package every command may import
(``sitl`` may import nothing else of ours, DESIGN.md); nothing in the bridge uses it.
A script flying the agent reads the status to know what happened without parsing text: 0 is a
mission complete (or a command that did what it was asked), every other outcome has its own code.
A flight has one end (control lost, fallback landing, climb aborted, signal, time limit or mission
complete); a log that lost records turns only a mission complete into :attr:`ExitCode.LOG_INCOMPLETE`
(a full disk during a fallback landing is still 5: the vehicle's fate matters more).
"""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit statuses of ``edge-agent run``, ``sitl``, ``calibrate``, ``certify`` and the rest."""

    OK = 0
    """run: the mission completed and the end action was commanded; other commands: done."""
    ERROR = 1
    """A start-up or input error (bad bundle, mission, option, link, key): nothing was flown or written."""
    USAGE = 2
    """The command line does not parse (argparse's own status)."""
    CONTROL_LOST = 3
    """run: the autopilot or the pilot took control away (mode change, failsafe); the agent let go."""
    TIME_LIMIT = 4
    """run: ``--max-duration`` ran out before the mission completed; the end action was commanded."""
    FALLBACK_LANDED = 5
    """run: the shield's fallback landed the vehicle before the mission completed."""
    LOG_INCOMPLETE = 6
    """run: the flight log lost records (disk full or failing): the record of the flight is not whole."""
    CLIMB_ABORTED = 7
    """run: the take-off climb was aborted before the policy flew (it came within a margin of the fence
    or a keep-out, or drifted off its column); the autopilot was told to land there (or to hold)."""
    SIGINT = 128 + signal.SIGINT
    """Stopped by Ctrl-C / SIGINT (130); run commanded the end action first when it was flying."""
    SIGTERM = 128 + signal.SIGTERM
    """Stopped by SIGTERM (143); run commanded the end action first when it was flying."""

    @classmethod
    def for_signal(cls, signum: int) -> ExitCode:
        """The status for a stop by signal ``signum`` (SIGINT or SIGTERM)."""
        return cls.SIGTERM if signum == signal.SIGTERM else cls.SIGINT


FLIGHT_OUTCOMES: frozenset[int] = frozenset(
    int(c)
    for c in (
        ExitCode.OK,
        ExitCode.CONTROL_LOST,
        ExitCode.TIME_LIMIT,
        ExitCode.FALLBACK_LANDED,
        ExitCode.LOG_INCOMPLETE,
        ExitCode.CLIMB_ABORTED,
    )
)
"""``run`` statuses of a flight that took place and printed its summary: a tool that stops its
flights by ``--max-duration`` (a benchmark, an experiment, the demo) reads the summary for these."""


def epilog_table(codes: tuple[ExitCode, ...] = tuple(ExitCode)) -> str:
    """The table for ``--help`` epilogs, one ``  CODE  meaning`` line per code in ``codes``."""
    lines = ["exit status:"]
    lines += [f"  {int(code):>3}  {_DOCS[code]}" for code in codes]
    return "\n".join(lines)


_DOCS: dict[ExitCode, str] = {
    ExitCode.OK: "mission complete (run); done (other commands)",
    ExitCode.ERROR: "start-up or input error: nothing flown or written",
    ExitCode.USAGE: "the command line does not parse",
    ExitCode.CONTROL_LOST: "control lost: the autopilot or the pilot took over",
    ExitCode.TIME_LIMIT: "--max-duration ran out before the mission completed",
    ExitCode.FALLBACK_LANDED: "landed by the shield's fallback before the mission completed",
    ExitCode.LOG_INCOMPLETE: "the flight log lost records (disk full or failing)",
    ExitCode.CLIMB_ABORTED: "take-off climb aborted (near the fence or a keep-out, or off its column)",
    ExitCode.SIGINT: "stopped by Ctrl-C (SIGINT)",
    ExitCode.SIGTERM: "stopped by SIGTERM",
}

__all__ = ["FLIGHT_OUTCOMES", "ExitCode", "epilog_table"]
