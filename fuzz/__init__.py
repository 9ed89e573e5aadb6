"""Fuzzing of every codec and parser of edge-agent: targets, the atheris runner, a corpus replayer, the corpus."""
