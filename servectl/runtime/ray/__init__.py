"""`runtime.kind: ray`: each model as a Ray Serve deployment whose replicas run the same
worker code as a local worker process (`replica.py`), behind servectl's own front end and
batcher (`model.py`): routes, auth, limits, deadlines and error shapes are the local ones.
Ray is imported only here (the `ray` extra); the local runtime never imports it."""
