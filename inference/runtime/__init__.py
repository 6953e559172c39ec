"""The serving core: ONNX Runtime sessions, validation, codecs and dynamic batching.

No Django here (a test guards it). Import from the submodules; this package imports
nothing itself so that `python -m inference.runtime.validate_child` starts light.
"""
