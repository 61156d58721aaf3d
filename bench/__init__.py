"""The project's benchmarks: `python -m bench` runs them all (`bench/run.py`)."""
