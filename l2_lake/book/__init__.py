"""The book engine: the order book (exact price strings, checksum), `InstrumentSync` (sequence,
resync, the cadence's records), the tape recorder of the engine's inputs, and the replays that
feed recorded frames or a tape through a fresh engine.
"""
