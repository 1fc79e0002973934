"""Rank 4: TinyCLIP, the embedded world's CLIP — the pre-training recipe, its config and caption
data, and the zero-shot check of the result."""
