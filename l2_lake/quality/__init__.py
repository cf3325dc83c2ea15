"""What an hour holds and whether it is good: per-hour statistics of the snapshots and the tape
(one scan each, cached), and the verdicts of the quality checks computed from them.
"""
