"""Experiments: the YAML schema, the runner and the report."""
