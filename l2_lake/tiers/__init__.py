"""The lake's tiers after capture: the verified gzip archive, curated Parquet, features, resampled
books from the tape, instrument metadata refreshes, the replica merge, which hours are due, and the
retention plan.
"""
