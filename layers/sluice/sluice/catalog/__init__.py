"""The model catalog: which backend serves a logical model name, within which limits, for whom."""
