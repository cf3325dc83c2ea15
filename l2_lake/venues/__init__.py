"""The venues' rules: what an exchange sends and how a book follows from it.

`messages` (the venue-neutral message types), `venue` (the `Venue` seam every venue fills),
`registry` (the venues by name), `rest` (the async REST client), and one package per venue:
`okx` (wire protocol, seqId/prevSeqId, CRC32 checksum). No server lives here: the OKX simulator
is the capture process's test oracle (`collector.simulator`).
"""
