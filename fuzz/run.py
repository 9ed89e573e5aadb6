"""Fuzz one target with atheris (libFuzzer), its imports instrumented; or replay the corpus or one input.

    .venv/bin/python -m fuzz.run mavlink --seconds 300 --save        # a campaign; grows the corpus
    .venv/bin/python -m fuzz.run bundle --seconds 5 -- -seed=1       # libFuzzer options after --
    .venv/bin/python -m fuzz.run mission --replay-corpus             # replay the committed corpus
    .venv/bin/python -m fuzz.run mission --replay fuzz/crashes/FILE  # one saved input

The targets' packages (``edge_agent``, ``firmware_bridge``) are imported inside
``atheris.instrument_imports``, so libFuzzer is guided by their Python coverage: its status lines
(``#N NEW cov: C ft: F corp: ...``) show the coverage count C growing. Without ``--save`` the run
starts from a temporary copy of the corpus, so the committed corpus is read, never written.

Corpus: fuzz/corpus/<target>/ (seeds from fuzz/make_corpus.py plus saved discoveries).
Crashes: fuzz/crashes/<target>-crash-<sha1> (libFuzzer's artifact); replay one with ``--replay FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
NAMES = ("bundle", "custom", "flightlog", "mavlink", "mission")
"""The targets of fuzz/targets.py (listed here so that parsing the arguments imports none of them)."""
INSTRUMENTED = ("edge_agent", "firmware_bridge", "fuzz.targets")
"""Packages whose bytecode atheris instruments: the code under test and the targets."""


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=NAMES)
    p.add_argument("--seconds", type=float, default=60.0, help="libFuzzer -max_total_time (default 60)")
    p.add_argument(
        "--save", action="store_true", help="fuzz in the committed corpus folder: keep what is new"
    )
    p.add_argument("--replay", default=None, metavar="FILE", help="run one saved input and report")
    p.add_argument("--replay-corpus", action="store_true", help="replay the committed corpus and exit")
    # libFuzzer's own options follow "--"; argparse would try to match them to the positional.
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    args.rest = argv[split + 1 :]
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    corpus_dir = FUZZ_DIR / "corpus" / args.target
    if args.replay or args.replay_corpus:
        from fuzz.replay import execute, load_corpus, replay
        from fuzz.targets import TARGETS

        target = TARGETS[args.target]
        if args.replay:
            execute(target, Path(args.replay).read_bytes())
            print("no failure")
        else:
            peak = replay(target, load_corpus(corpus_dir))
            print(f"{args.target}: corpus replayed, peak traced memory {peak / 1e6:.1f} MB")
        return 0

    import atheris  # type: ignore[import-not-found]

    # Instrument the code under test: everything of ours imported from here on is rewritten with
    # coverage counters and comparison hooks that libFuzzer reads.
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        from fuzz.targets import TARGETS
    target = TARGETS[args.target]

    def one(data: bytes) -> None:
        with contextlib.suppress(*target.allowed):
            target.run(data)

    crashes = FUZZ_DIR / "crashes"
    crashes.mkdir(exist_ok=True)
    work = corpus_dir if args.save else Path(tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    if not args.save:
        shutil.copytree(corpus_dir, work, dirs_exist_ok=True)
    libfuzzer = [
        sys.argv[0],
        str(work),
        f"-max_total_time={max(1, round(args.seconds))}",
        "-timeout=2",  # one input longer than 2 s is a hang
        "-rss_limit_mb=2048",
        "-max_len=16384",
        f"-artifact_prefix={crashes}/{args.target}-",
        "-print_final_stats=1",
        *args.rest,
    ]
    atheris.Setup(libfuzzer, one)
    atheris.Fuzz()  # libFuzzer exits the process when the time is up
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
