"""The lake's formats (docs/CONTRACT.md): the record and event lines, the directory layout, UTC
hour arithmetic, the hour files in every form (JSONL, gzip, the tape's Parquet) read as the same
bytes, their verified digests, the append-only hour writer with its crash repair, and the
instrument metadata files.
"""
