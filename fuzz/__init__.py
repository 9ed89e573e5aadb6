"""Fuzzing of every codec and parser of edge-agent: targets, a coverage-guided engine, the corpus."""
