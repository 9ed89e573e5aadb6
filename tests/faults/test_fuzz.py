"""Fuzzing in CI: every codec and parser, from the committed corpus, for a bounded time.

Per target: replay the whole corpus (fuzz/corpus/<target>/) with memory tracing, then run the
coverage-guided engine (fuzz/engine.py) for FUZZ_SECONDS (env, default 4 s) from a fixed seed.
A crash, a hang (> 2 s on one input) or more than 64 MB traced for one input fails the test and
leaves the input in fuzz/crashes/. Longer campaigns: ``python -m fuzz.run TARGET --seconds 600 --save``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import MissionError
from edge_agent.mission import load_mission
from fuzz.engine import FuzzFailure, execute, fuzz, load_corpus, replay
from fuzz.targets import CORPUS, TARGETS, Target

SECONDS = float(os.environ.get("FUZZ_SECONDS", "4"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_from_corpus(name: str) -> None:
    target = TARGETS[name]
    corpus = load_corpus(CORPUS / name)
    assert len(corpus) >= 2, f"corpus for {name} is missing: run python -m fuzz.make_corpus"
    replay(target, corpus, max_peak_bytes=64 << 20)
    stats = fuzz(target, corpus, seconds=SECONDS, rng=np.random.default_rng(0))
    assert stats.execs > len(corpus)
    assert stats.arcs > 20  # the tracer saw the parser's code: the engine is really guided
    replay(target, stats.new_inputs, max_peak_bytes=64 << 20)


def test_the_engine_reports_crashes_and_hangs(tmp_path: Path) -> None:
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
    for f in (Path(__file__).resolve().parents[2] / "fuzz" / "crashes").glob("[cs][rl]*-*.bin"):
        f.unlink()


def test_mission_file_that_is_not_utf8_gets_a_mission_error(tmp_path: Path) -> None:
    # Found by the mission fuzzer: a bare UnicodeDecodeError used to escape load_mission.
    p = tmp_path / "m.toml"
    p.write_bytes(b'[geofence]\nkind = "\xb3"\n')
    with pytest.raises(MissionError, match=re.escape("is not UTF-8 text (byte 19); save it as UTF-8 TOML")):
        load_mission(p)
