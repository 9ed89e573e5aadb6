"""Experiments behind the claims of docs/experiments.md: step shift, shielded campaigns, log vs scenario."""
