"""tickcast's daemon package: orchestration and the edges.

CLI, settings, the clock, the ccxt source, the pipeline, the scheduler and
systemd notification live here; it is the only package that wires `storage`
and `forecaster` together. (Unrelated to the PyPI package python-daemon.)
"""

__version__ = "0.1.0"
