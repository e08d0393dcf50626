"""Training: the recipe, the rows a trainer sees, the hybrid batch sampler and the sentence-transformers trainer."""
