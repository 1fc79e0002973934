"""Rank 0: what every other package may use — errors, atomic file writes, locks, where files
live, the registry helper, torch.distributed helpers. Imports nothing else of trm_lib."""
