"""Research access without Dagster: `read_books`, `book_at`, export, and the lake's sources (a
directory or a bucket) they read from.
"""
