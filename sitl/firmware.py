"""The real autopilot firmware as SITL: PX4 (with its SIH simulator) and ArduCopter.

The emulator in ``sitl/`` imitates these; where the two disagree the firmware is right, so the
tests that matter fly both. :class:`FirmwareSitl` starts one or more vehicles of one firmware,
each in its own scratch directory, all inside one private loopback-only network namespace
(:class:`sitl.netns.NetNamespace`: the firmware binds every interface), waits for each one's
first HEARTBEAT, and stops everything on exit.

Where the binaries come from, first found wins: the ``firmware_dir`` argument (``--firmware-dir``),
the ``EDGE_AGENT_FIRMWARE_DIR`` environment variable, ``../shared/firmware`` beside the checkout
or the working directory. The folder holds ``px4/bin/px4`` + ``px4/etc`` and
``ardupilot/arducopter`` + ``ardupilot/copter.parm`` (``../shared/firmware/README.md``).

Links, inside the namespace, for vehicle ``i`` (MAVLink system id ``i + 1``):

| firmware | agent (``edge-agent run --link``) | second link (observer, ground station) |
|---|---|---|
| PX4 | ``udpin://127.0.0.1:{14540+i}`` (PX4 sends from 14580+i) | ``udpin://127.0.0.1:14550`` (every vehicle; PX4's GCS link) |
| ArduCopter | ``tcp://127.0.0.1:{5760+10i}`` (SERIAL0) | ``tcp://127.0.0.1:{5762+10i}`` (SERIAL1) |
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymavlink.dialects.v20 import common as mavlink2

from sitl.netns import NamespaceError, NetNamespace

FIRMWARE_ENV = "EDGE_AGENT_FIRMWARE_DIR"
KINDS = ("px4", "ardupilot")
_PX4_AIRFRAME = "10040"  # sihsim_quadx


class FirmwareUnavailable(RuntimeError):
    """The firmware cannot be run here (binary missing, no namespaces); the message says what to do."""


class FirmwareError(RuntimeError):
    """The firmware started but misbehaved (exited, no HEARTBEAT in time)."""


def firmware_root(firmware_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``px4/`` and ``ardupilot/``: argument, environment, then ../shared/firmware."""
    candidates: list[tuple[str, Path]] = []
    if firmware_dir is not None:
        candidates.append(("--firmware-dir", Path(firmware_dir)))
    elif os.environ.get(FIRMWARE_ENV):
        candidates.append((FIRMWARE_ENV, Path(os.environ[FIRMWARE_ENV])))
    else:
        repo = Path(__file__).resolve().parents[1]
        candidates += [
            ("../shared/firmware", repo.parent / "shared" / "firmware"),
            ("../shared/firmware", Path.cwd().parent / "shared" / "firmware"),
            ("./shared/firmware", Path.cwd() / "shared" / "firmware"),
        ]
    for _, path in candidates:
        if path.is_dir():
            return path.resolve()
    where, path = candidates[0]
    raise FirmwareUnavailable(
        f"no firmware folder at {path} (from {where}); pass --firmware-dir DIR or set {FIRMWARE_ENV} "
        "to a folder with px4/bin/px4 and ardupilot/arducopter (see ../shared/firmware/README.md)"
    )


def firmware_binary(kind: str, firmware_dir: str | os.PathLike[str] | None = None) -> Path:
    """The firmware's executable, or FirmwareUnavailable naming what is missing and the fix."""
    if kind not in KINDS:
        raise FirmwareUnavailable(f"unknown firmware {kind!r}; choose one of {', '.join(KINDS)}")
    root = firmware_root(firmware_dir)
    binary = root / "px4" / "bin" / "px4" if kind == "px4" else root / "ardupilot" / "arducopter"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise FirmwareUnavailable(
            f"{kind} SITL binary not found or not executable: {binary}; "
            f"pass --firmware-dir DIR or set {FIRMWARE_ENV}"
        )
    return binary


def unavailable_reason(kind: str, firmware_dir: str | os.PathLike[str] | None = None) -> str | None:
    """None when ``kind`` can fly here, else one line saying why not (for test skips)."""
    try:
        firmware_binary(kind, firmware_dir)
    except FirmwareUnavailable as exc:
        return str(exc)
    from sitl.netns import available

    why = available()
    return None if why is None else f"no private network namespace for the firmware: {why}"


@dataclass
class FirmwareVehicle:
    """One running firmware instance."""

    kind: str
    instance: int
    workdir: Path
    proc: subprocess.Popen[Any]
    log_path: Path
    sysid: int = field(init=False)

    def __post_init__(self) -> None:
        self.sysid = self.instance + 1

    @property
    def link_url(self) -> str:
        """What ``edge-agent run --link`` opens (inside the namespace)."""
        if self.kind == "px4":
            return f"udpin://127.0.0.1:{14540 + self.instance}"
        return f"tcp://127.0.0.1:{5760 + 10 * self.instance}"

    @property
    def observer_url(self) -> str:
        """A second link for a ground station or a test's observer (inside the namespace)."""
        if self.kind == "px4":
            return "udpin://127.0.0.1:14550"
        return f"tcp://127.0.0.1:{5762 + 10 * self.instance}"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the firmware printed (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class FirmwareSitl:
    """Start ``n`` vehicles of real firmware in one private namespace; a context manager.

    ``params`` are set at boot (PX4: ``PX4_PARAM_*`` in the environment; ArduCopter: an extra
    defaults file). ``speedup`` > 1 runs ArduCopter faster than real time (lock-step); with
    ``boot_speedup`` it boots at that pace and is set back to ``speedup`` once its estimator has an
    origin (the cold boot's ~40 s in a few seconds; the flight at the requested pace). PX4 SIH
    always runs in real time here. ``home`` is (lat, lon, alt_amsl_m).
    """

    def __init__(
        self,
        kind: str,
        *,
        n: int = 1,
        firmware_dir: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        params: Mapping[str, float] | None = None,
        speedup: float = 1.0,
        boot_speedup: float | None = None,
        home: tuple[float, float, float] | None = None,
        heartbeat_timeout_s: float = 60.0,
    ) -> None:
        if n < 1:
            raise ValueError(f"need at least one vehicle, got {n}")
        if kind == "px4" and n > 10:
            raise ValueError("PX4 SITL gives each of at most 10 instances its own offboard port")
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        if kind == "px4" and (speedup != 1.0 or boot_speedup is not None):
            raise ValueError("PX4 SIH runs in real time here; --speedup applies to ArduCopter only")
        if boot_speedup is not None and not boot_speedup >= speedup:
            raise ValueError(f"boot_speedup must be >= speedup ({speedup}), got {boot_speedup}")
        self.kind = kind
        self.binary = firmware_binary(kind, firmware_dir)
        self.n = n
        self.params = dict(params or {})
        self.speedup = speedup
        self.boot_speedup = boot_speedup
        self.home = home
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"edge-agent-{kind}-")) if workdir is None else Path(workdir)
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ns: NetNamespace | None = None
        self.vehicles: list[FirmwareVehicle] = []

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> FirmwareSitl:
        """Make the namespace, launch every vehicle, wait for each one's first HEARTBEAT."""
        try:
            self.ns = NetNamespace()
        except NamespaceError as exc:
            raise FirmwareUnavailable(str(exc)) from None
        try:
            instances = range(self.n) if self.kind != "px4" else _free_px4_instances(self.n)
            for i in instances:
                self.vehicles.append(self._launch(i))
            self._wait_heartbeats()
            if self.boot_speedup is not None:
                for v in self.vehicles:
                    self._settle_to_speedup(v)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every vehicle and the namespace; remove scratch directories this made."""
        if self.ns is not None:
            for v in self.vehicles:
                self.ns.stop(v.proc, timeout_s=5.0)
            self.ns.close()
            self.ns = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FirmwareSitl:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- launching ------------------------------------------------------------------------------
    def _launch(self, i: int) -> FirmwareVehicle:
        assert self.ns is not None
        wd = self.workdir / f"{self.kind}-{i}"
        wd.mkdir(parents=True, exist_ok=True)
        log_path = wd / "console.log"
        env = dict(os.environ)
        if self.kind == "px4":
            root = self.binary.parent.parent
            shim = _px4_command_links(self.binary, self.workdir / "px4-bin")
            env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
            env.update(
                PX4_SYS_AUTOSTART=_PX4_AIRFRAME,
                PX4_SIM_MODEL="sihsim_quadx",
                PX4_SIMULATOR="sihsim",
                HEADLESS="1",
            )
            if self.home is not None:
                env.update(
                    PX4_HOME_LAT=repr(self.home[0]),
                    PX4_HOME_LON=repr(self.home[1]),
                    PX4_HOME_ALT=repr(self.home[2]),
                )
            env.update({f"PX4_PARAM_{k}": _param_text(v) for k, v in self.params.items()})
            argv = [str(shim / "px4"), "-i", str(i), "-d", str(root / "etc"), "-s", "etc/init.d-posix/rcS"]
        else:
            defaults = [str(self.binary.parent / "copter.parm")]
            if self.params:
                extra = wd / "extra.parm"
                extra.write_text("".join(f"{k} {_param_text(v)}\n" for k, v in self.params.items()))
                defaults.append(str(extra))
            argv = [
                str(self.binary),
                "--model",
                "+",
                "--speedup",
                _param_text(self.boot_speedup or self.speedup),
                "--defaults",
                ",".join(defaults),
                "--serial0",
                "tcp:0",
                "--serial1",
                "tcp:2",
                "-I",
                str(i),
                "--sysid",  # -I moves the ports only; each vehicle its own MAVLink system id
                str(i + 1),
            ]
            if self.home is not None:
                argv += ["--home", f"{self.home[0]},{self.home[1]},{self.home[2]},0"]
        with open(log_path, "wb") as log:
            proc = self.ns.popen(argv, cwd=wd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return FirmwareVehicle(self.kind, i, wd, proc, log_path)

    def _wait_heartbeats(self) -> None:
        """Wait for every vehicle's first HEARTBEAT on its second link (the agent's is left alone)."""
        deadline = time.monotonic() + self.heartbeat_timeout_s
        pending = {v.sysid: v for v in self.vehicles}
        if self.kind == "px4":
            with self.observer_socket(self.vehicles[0]) as sock:
                self._collect_heartbeats(sock, pending, deadline)
        else:
            for v in self.vehicles:
                with self.observer_socket(v, connect_deadline=deadline) as sock:
                    self._collect_heartbeats(sock, {v.sysid: v}, deadline)
                pending.pop(v.sysid, None)

    def _collect_heartbeats(
        self, sock: socket.socket, pending: dict[int, FirmwareVehicle], deadline: float
    ) -> None:
        parser = mavlink2.MAVLink(None)
        parser.robust_parsing = True
        sock.settimeout(0.2)
        while pending:
            for v in pending.values():
                if v.proc.poll() is not None:
                    raise FirmwareError(
                        f"{self.kind} instance {v.instance} exited with code {v.proc.returncode} before its "
                        f"first HEARTBEAT; its console ({v.log_path}):\n{v.log_tail()}"
                    )
            if time.monotonic() > deadline:
                v = next(iter(pending.values()))
                raise FirmwareError(
                    f"no HEARTBEAT from {self.kind} instance {v.instance} within {self.heartbeat_timeout_s:.0f} s "
                    f"on {v.observer_url}; its console ({v.log_path}):\n{v.log_tail()}"
                )
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise FirmwareError(f"{self.kind} closed the observer link before its first HEARTBEAT")
            for msg in parser.parse_buffer(data) or []:
                if msg.get_type() == "HEARTBEAT" and msg.get_srcComponent() == 1:
                    pending.pop(msg.get_srcSystem(), None)

    def _settle_to_speedup(self, v: FirmwareVehicle) -> None:
        """ArduCopter booted at ``boot_speedup``: once its EKF has an origin (LOCAL_POSITION_NED
        flows), set SIM_SPEEDUP back to ``speedup`` and wait for the vehicle to confirm it. The
        ~40 s of estimator convergence pass in a few seconds; everything flown after is at the
        requested pace (honest for the shield, whose timing is wall-clock)."""
        mav = mavlink2.MAVLink(None, srcSystem=250, srcComponent=190)
        parser = mavlink2.MAVLink(None)
        parser.robust_parsing = True
        deadline = time.monotonic() + self.heartbeat_timeout_s
        with self.observer_socket(v) as sock:
            sock.settimeout(0.2)
            have_position = confirmed = False
            next_send = 0.0
            while not confirmed:
                if time.monotonic() > deadline:
                    raise FirmwareError(
                        f"ArduCopter instance {v.instance} booted at --speedup {self.boot_speedup} did not "
                        f"{'confirm SIM_SPEEDUP' if have_position else 'stream LOCAL_POSITION_NED'} in time:\n"
                        f"{v.log_tail()}"
                    )
                if time.monotonic() >= next_send:
                    if not have_position:
                        msg = mav.command_long_encode(v.sysid, 1, 511, 0, 32, 1e5, 0, 0, 0, 0, 0)
                    else:
                        msg = mav.param_set_encode(v.sysid, 1, b"SIM_SPEEDUP", float(self.speedup), 9)
                    sock.send(msg.pack(mav))
                    next_send = time.monotonic() + 0.5
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                for msg in parser.parse_buffer(data) or []:
                    kind = msg.get_type()
                    if kind == "LOCAL_POSITION_NED" and not have_position:
                        have_position, next_send = True, 0.0
                    elif kind == "PARAM_VALUE" and msg.param_id == "SIM_SPEEDUP" and have_position:
                        confirmed = abs(msg.param_value - self.speedup) < 1e-6

    @contextlib.contextmanager
    def observer_socket(
        self, vehicle: FirmwareVehicle, connect_deadline: float | None = None
    ) -> Iterator[socket.socket]:
        """A raw socket on ``vehicle``'s second link, inside the namespace (bytes of MAVLink)."""
        assert self.ns is not None
        if self.kind == "px4":
            sock = self.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with self.ns.entered():
                sock.bind(("127.0.0.1", 14550))
        else:
            deadline = connect_deadline if connect_deadline is not None else time.monotonic() + 30.0
            port = 5762 + 10 * vehicle.instance
            while True:
                sock = self.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.connect(("127.0.0.1", port))
                    break
                except OSError:
                    sock.close()
                    if vehicle.proc.poll() is not None or time.monotonic() > deadline:
                        raise FirmwareError(
                            f"cannot connect to ArduCopter instance {vehicle.instance} on 127.0.0.1:{port}; "
                            f"its console ({vehicle.log_path}):\n{vehicle.log_tail()}"
                        ) from None
                    time.sleep(0.1)
        try:
            yield sock
        finally:
            sock.close()

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a client (the agent, MAVProxy, a test) inside the firmware's namespace."""
        assert self.ns is not None, "start() first"
        return self.ns.popen(argv, **kwargs)

    def join_hint(self, command: str = "<command>") -> str:
        """The shell line that runs a client next to the firmware."""
        assert self.ns is not None, "start() first"
        return self.ns.join_hint(command)


def _free_px4_instances(n: int) -> list[int]:
    """``n`` PX4 instance numbers no running PX4 holds.

    PX4 SITL takes ``/tmp/px4_lock-N`` (and ``/tmp/px4-sock-N``) for instance N: paths in the
    file system, which a network namespace does not separate, so two launchers on one machine (two
    test runs) must not both use instance 0. The ports follow the instance (14540 + N)."""
    free: list[int] = []
    for i in range(10):
        try:
            fd = os.open(f"/tmp/px4_lock-{i}", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # PX4 takes a POSIX record lock on it
        except OSError:
            continue  # a running PX4 holds it
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            free.append(i)
        finally:
            os.close(fd)
        if len(free) == n:
            return free
    raise FirmwareUnavailable(
        f"only {len(free)} of PX4's 10 SITL instances are free here; stop the other PX4 runs"
    )


def _px4_command_links(binary: Path, shim: Path) -> Path:
    """A folder of PX4's ``px4-<module>`` command links, each pointing at ``px4``.

    PX4's start-up script runs ``px4-param``, ``px4-ekf2``, ... from PATH; the build makes them
    symlinks to ``px4``. A copy that went through a tool without symlinks (as ../shared/ did:
    each is a 3-byte text file saying ``px4``) cannot run them, so they are made afresh here,
    one link per name found beside the binary.
    """
    shim.mkdir(parents=True, exist_ok=True)
    for entry in binary.parent.iterdir():
        name = entry.name
        if name != "px4" and not name.startswith("px4-"):
            continue
        link = shim / name
        if link.is_symlink() or link.exists():
            continue
        target = binary if name == "px4" or name.endswith(".sh") else Path("px4")
        if name.endswith(".sh"):
            target = entry
        link.symlink_to(target)
    return shim


def _param_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
