"""Fuzz one target from the command line; grow the committed corpus with what finds new coverage.

    .venv/bin/python -m fuzz.run mavlink --seconds 300 --save     # pure-Python coverage-guided engine
    .venv/bin/python -m fuzz.run bundle --atheris -- -max_total_time=600   # libFuzzer, if installed

Corpus: fuzz/corpus/<target>/ (seeds from fuzz/make_corpus.py plus saved discoveries).
Crashes: fuzz/crashes/<target>-<sha1>.bin; replay one with ``--replay FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys

import numpy as np

from fuzz.engine import execute, fuzz, load_corpus, replay
from fuzz.targets import CORPUS, TARGETS


def main() -> int:
    """Command-line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true", help="write new-coverage inputs into the corpus")
    p.add_argument("--replay", default=None, help="run one saved input and report")
    p.add_argument("--atheris", action="store_true", help="use atheris/libFuzzer (pip install atheris)")
    p.add_argument("rest", nargs="*", help="libFuzzer options after --")
    args = p.parse_args()
    target = TARGETS[args.target]
    corpus_dir = CORPUS / args.target
    if args.replay:
        with open(args.replay, "rb") as f:
            execute(target, f.read())
        print("no failure")
        return 0
    if args.atheris:
        import atheris  # type: ignore[import-not-found]

        def one(data: bytes) -> None:
            with contextlib.suppress(*target.allowed):
                target.run(data)

        atheris.Setup([sys.argv[0], str(corpus_dir), *args.rest], one)
        atheris.Fuzz()
        return 0
    corpus = load_corpus(corpus_dir)
    stats = fuzz(target, corpus, seconds=args.seconds, rng=np.random.default_rng(args.seed))
    peak = replay(target, corpus + stats.new_inputs)
    print(
        f"{args.target}: {stats.execs} execs in {args.seconds:.0f} s, {stats.arcs} arcs, "
        f"corpus {len(corpus)} → {stats.corpus}, peak traced memory {peak / 1e6:.1f} MB"
    )
    if args.save:
        for data in stats.new_inputs:
            (corpus_dir / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
