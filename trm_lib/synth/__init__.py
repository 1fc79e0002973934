"""Rank 4: SynthScenes, the embedded world — scene layout, pictogram rendering, captions for
TinyCLIP's corpus and the world's files, read back through the ordinary dataset loader
(``trm_lib.datasets.load("synthscenes")``)."""
