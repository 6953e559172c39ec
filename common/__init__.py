"""Modelhub's shared package: below every app, above nothing (no Django, no app imports).

`errors` holds the one error base every layer raises; `http` renders it as JSON for every
front (the prediction edge, DRF, Django's error handlers).
"""
