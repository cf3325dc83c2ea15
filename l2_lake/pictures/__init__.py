"""The pictures (matplotlib, Agg): lake health, an hour's book and features, a tape hour. Drawn
from the statistics and readers below; nothing below draws.
"""
