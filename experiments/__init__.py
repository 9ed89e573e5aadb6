"""Research experiments behind docs/experiments.md and docs/safety.md, each with its own main.

Not installed (pyproject's package list leaves this folder out): run them from a checkout, e.g.
``python -m experiments.step_shift --help``. Modules: ``step_shift`` (the calibrator after a wind
step), ``campaigns`` (shielded vs unshielded campaigns), ``log_vs_scenario`` (calibration from flight
logs vs scenarios), ``kill_campaign`` (the agent killed in the vectorised SITL) and
``firmware_kill`` (the agent killed over real PX4 / ArduCopter SITL).
"""
