"""Coverage-guided fuzzing of everything a guest or a kernel file controls (`make fuzz`).

`python -m fuzz.run` runs each target (fuzz/targets) in a worker process of its own
(`python -m fuzz.worker`, atheris over libFuzzer) under the limits of fuzz/limits.py, and
prints cases per second per target and the total.
"""
