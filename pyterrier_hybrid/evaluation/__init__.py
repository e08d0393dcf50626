"""Evaluation: settings (Mo / Cr / Mul), measures, the exact fast path, statistics."""
