"""Where the lake lives: durable local files, the bounded walk of a lake directory, the S3 client,
and the tree every pipeline step asks (a directory or a bucket, the same questions either way).
"""
