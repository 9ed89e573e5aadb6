"""Fuzzing in CI: every codec and parser, from the committed corpus, for a bounded time.

Per target: replay the whole corpus (fuzz/corpus/<target>/) in this process with memory tracing
(fuzz/replay.py), then fuzz it with atheris / libFuzzer, the targets' imports instrumented
(``python -m fuzz.run TARGET``), for FUZZ_SECONDS (env, default 3 s) from a temporary copy of the
corpus. A crash, a hang (> 2 s on one input) or more than 64 MB traced for one input fails the
test and leaves the input in fuzz/crashes/. The libFuzzer status lines are printed (``pytest -s``)
and checked: instrumented coverage is seen at start, and the run finds inputs with new coverage.
Longer campaigns: ``python -m fuzz.run TARGET --seconds 600 --save``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_agent.errors import MissionError
from edge_agent.mission import load_mission
from fuzz.replay import FuzzFailure, execute, load_corpus, replay
from fuzz.targets import CORPUS, TARGETS, Target

SECONDS = float(os.environ.get("FUZZ_SECONDS", "3"))
ROOT = Path(__file__).resolve().parents[2]
STATUS = re.compile(r"^#(\d+)\s+(INITED|NEW|REDUCE|DONE|pulse)\s+cov: (\d+) ft: (\d+)", re.MULTILINE)
# Edges of instrumented Python seen on the corpus alone, well below what each target reaches
# (bundle 156, custom 66, flightlog 37, mavlink 120, mission 129 when measured): a libFuzzer that
# runs blind (imports not instrumented) sees almost none.
MIN_INITED_COV = {"bundle": 80, "custom": 30, "flightlog": 20, "mavlink": 60, "mission": 60}


def _libfuzzer(
    target: str, seconds: float, *extra: str, corpus_root: Path | None = None, prelude: str = ""
) -> tuple[int, str]:
    """Run ``python -m fuzz.run`` in a subprocess (libFuzzer exits its process); (rc, output).

    ``corpus_root`` replaces the fuzz folder (its corpus/ and crashes/); ``prelude`` runs first.
    """
    code = f"import sys, pathlib; from fuzz import run; {prelude}\n"
    if corpus_root is not None:
        code += f"run.FUZZ_DIR = pathlib.Path({str(corpus_root)!r})\n"
    code += "sys.exit(run.main(sys.argv[1:]))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-c", code, target, "--seconds", str(seconds), "--", "-seed=1", *extra],
        capture_output=True,
        text=True,
        timeout=120 + seconds,
        env=env,
        cwd=ROOT,
    )
    return out.returncode, out.stdout + out.stderr


def _status(output: str) -> list[tuple[int, str, int, int]]:
    return [(int(n), kind, int(cov), int(ft)) for n, kind, cov, ft in STATUS.findall(output)]


def test_atheris_is_installed() -> None:
    # A dev dependency (pyproject [dev]); without it the fuzz tests below cannot fuzz.
    import atheris  # type: ignore[import-not-found]  # noqa: F401


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_from_corpus(name: str) -> None:
    target = TARGETS[name]
    corpus = load_corpus(CORPUS / name)
    assert len(corpus) >= 2, f"corpus for {name} is missing: run python -m fuzz.make_corpus"
    replay(target, corpus, max_peak_bytes=64 << 20)
    rc, output = _libfuzzer(name, SECONDS)
    lines = _status(output)
    print(f"{name}:", *(f"#{n} {kind} cov: {cov} ft: {ft}" for n, kind, cov, ft in lines), sep="\n  ")
    assert rc == 0, f"libFuzzer found a failure in {name} (input in fuzz/crashes/):\n{output[-3000:]}"
    kinds = [kind for _, kind, _, _ in lines]
    assert "INITED" in kinds and kinds[-1] == "DONE", output[-2000:]
    inited = next(line for line in lines if line[1] == "INITED")
    done = lines[-1]
    assert inited[2] >= MIN_INITED_COV[name], f"instrumentation is off: INITED cov {inited[2]}"
    assert done[2] >= inited[2] and done[3] > inited[3], f"no new coverage in {SECONDS} s: {inited} → {done}"
    assert "NEW" in kinds
    assert not list((CORPUS / name).glob("crash-*"))  # the committed corpus was only read


def test_coverage_count_grows_from_an_empty_corpus() -> None:
    # The guidance itself: from one empty input, libFuzzer climbs on the instrumented parser's
    # coverage, and the cov: count it prints grows (MAVLink: ~23 edges at start, ~70 after 3 s).
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "corpus" / "mavlink").mkdir(parents=True)
        rc, output = _libfuzzer("mavlink", 2.0, corpus_root=Path(tmp))
    lines = _status(output)
    print(*(f"#{n} {kind} cov: {cov} ft: {ft}" for n, kind, cov, ft in lines), sep="\n")
    assert rc == 0, output[-3000:]
    covs = [cov for _, _, cov, _ in lines]
    assert covs == sorted(covs) and covs[-1] >= covs[0] + 15, covs


def test_libfuzzer_reports_an_uncaught_exception_with_the_input(tmp_path: Path) -> None:
    # A stand-in target that raises on inputs starting with 0xFD: libFuzzer finds one, exits
    # non-zero, and leaves the input where --replay can run it.
    prelude = (
        "import fuzz.targets as t\n"
        "def boom(data):\n"
        "    if data[:1] == b'\\xfd':\n"
        "        raise KeyError('boom')\n"
        "t.TARGETS['custom'] = t.Target('custom', boom, ())"
    )
    (tmp_path / "corpus" / "custom").mkdir(parents=True)
    rc, output = _libfuzzer("custom", 20.0, corpus_root=tmp_path, prelude=prelude)
    assert rc != 0 and "Uncaught Python exception" in output and "KeyError: 'boom'" in output, output[-2000:]
    (artifact,) = (tmp_path / "crashes").glob("custom-crash-*")
    assert artifact.read_bytes()[:1] == b"\xfd"


def test_the_replayer_reports_crashes_and_hangs(tmp_path: Path) -> None:
    def crashes(data: bytes) -> None:
        if data.startswith(b"\xfd\xfd"):
            raise KeyError("boom")

    def hangs(data: bytes) -> None:
        while data:
            pass

    with pytest.raises(FuzzFailure, match=re.escape("crashy: KeyError: 'boom' (input saved to")):
        execute(Target("crashy", crashes, ()), b"\xfd\xfd")
    execute(Target("crashy", crashes, (KeyError,)), b"\xfd\xfd")  # documented errors are fine
    with pytest.raises(FuzzFailure, match=re.escape("slow: an input ran longer than 0.2 s")):
        execute(Target("slow", hangs, ()), b"x", timeout_s=0.2)
    for f in (ROOT / "fuzz" / "crashes").glob("[cs][rl]*-*.bin"):
        f.unlink()


def test_mission_file_that_is_not_utf8_gets_a_mission_error(tmp_path: Path) -> None:
    # Found by the mission fuzzer: a bare UnicodeDecodeError used to escape load_mission.
    p = tmp_path / "m.toml"
    p.write_bytes(b'[geofence]\nkind = "\xb3"\n')
    with pytest.raises(MissionError, match=re.escape("is not UTF-8 text (byte 19); save it as UTF-8 TOML")):
        load_mission(p)
