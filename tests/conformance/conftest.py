"""Targets for the conformance suite: the emulator (both flavours) and the real firmware.

One target instance per test module (``target`` is module-scoped and parametrised), so a cold
ArduCopter boots once. The fixture connects the one client right after the target's first
HEARTBEAT and records the first 5 s untouched (only an ARM attempt at 0.5 s, to see the refusal
before ready); the tests then read that record and make their own requests in file order.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sitl.firmware import FirmwareSitl, unavailable_reason
from tests.conformance.client import MavClient, result_name
from tests.conformance.table import RESULTS_JSON, TARGETS, write_results
from tests.e2e.conftest import start_sitl

BOOT_WINDOW_S = 5.0
ARM_PROBE_AT_S = 0.5


@dataclass
class Target:
    name: str  # emulator-px4, real-ardupilot, ...
    flavor: str  # px4 | ardupilot
    client: MavClient
    t0: float  # the client's first HEARTBEAT from the vehicle (time.monotonic())
    results: dict[str, Any]
    started_s: float = field(default_factory=time.monotonic)
    arm_probe: dict[str, Any] = field(default_factory=dict)

    @property
    def real(self) -> bool:
        return self.name.startswith("real-")

    def record(self, rule: str, value: Any) -> None:
        self.results.setdefault(rule, {})[self.name] = value


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, Any]]:
    """rule -> target -> measured value; merged into docs/conformance.json at the end."""
    collected: dict[str, Any] = {}
    yield collected
    if collected:
        write_results(collected, RESULTS_JSON)


def _wait_first_heartbeat(client: MavClient, timeout_s: float) -> float:
    hb = client.wait_for(
        lambda r: r.type == "HEARTBEAT" and r.msg.get_srcComponent() == 1,
        since=0.0,
        timeout_s=timeout_s,
    )
    if hb is None:
        raise AssertionError("no HEARTBEAT from the target")
    return hb.t


def _boot_phase(client: MavClient) -> tuple[float, dict[str, Any]]:
    t0 = _wait_first_heartbeat(client, 20.0)
    time.sleep(max(0.0, t0 + ARM_PROBE_AT_S - time.monotonic()))
    t_arm = time.monotonic()
    result, _ = client.command_long(400, 1)
    time.sleep(max(0.0, t0 + BOOT_WINDOW_S - time.monotonic()))
    texts = [x for x in client.texts(t_arm, t_arm + 2.5) if "arm" in x.lower()]
    probe = {"ack": result_name(result), "texts": texts}
    return t0, probe


@pytest.fixture(scope="module", params=TARGETS)
def target(
    request: pytest.FixtureRequest, results: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    name: str = request.param
    kind, flavor = name.split("-")
    if kind == "real":
        why = unavailable_reason(flavor)
        if why is not None:
            pytest.skip(f"real {flavor} firmware not available here: {why}")
        with FirmwareSitl(flavor, workdir=tmp_path_factory.mktemp(name)) as fw:
            assert fw.ns is not None
            vehicle = fw.vehicles[0]
            if flavor == "px4":
                sock = fw.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
                with fw.ns.entered():
                    sock.bind(("127.0.0.1", 14540 + vehicle.instance))
                client = MavClient(sock, target_system=vehicle.sysid)
            else:
                sock = fw.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
                with fw.ns.entered():
                    sock.connect(("127.0.0.1", 5760 + 10 * vehicle.instance))
                client = MavClient(sock, target_system=vehicle.sysid)
            with client:
                t0, probe = _boot_phase(client)
                yield Target(name, flavor, client, t0, results, arm_probe=probe)
    else:
        # the emulator's default cold boot (the real firmware's), not the tests' --fast-boot; PX4 as
        # SIH's airframe sets it up: no RC (COM_RC_IN_MODE 1)
        link = "udpin://127.0.0.1:0" if flavor == "px4" else "tcpin://127.0.0.1:0"
        extra = ("--param", "COM_RC_IN_MODE=1") if flavor == "px4" else ()
        sitl = start_sitl("--flavor", flavor, "--link", link, *extra, cold_boot=True)
        try:
            host, port = sitl.agent_url.split("://", 1)[1].rsplit(":", 1)
            if flavor == "px4":
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                client = MavClient(sock, peer=(host, int(port)))
            else:
                sock = socket.create_connection((host, int(port)), timeout=5.0)
                client = MavClient(sock)
            with client:
                t0, probe = _boot_phase(client)
                yield Target(name, flavor, client, t0, results, arm_probe=probe)
        finally:
            sitl.stop()
