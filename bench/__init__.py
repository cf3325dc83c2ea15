"""Benchmarks of okx-l2 (run as `python -m bench.<name>`); figures are ratios measured in one run."""
