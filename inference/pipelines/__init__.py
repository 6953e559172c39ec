"""Serving pipelines (issue #14): typed, versioned graphs of steps behind an endpoint.

graph.py (the checked graph, no Django), expr.py (the rule language), features.py (the
online store), executor.py (one request), serving.py (routes of an endpoint's table),
services.py (create, version, attach), api.py (REST). See docs/pipelines.md.
"""
