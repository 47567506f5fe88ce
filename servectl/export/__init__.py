"""`servectl export`: the same spec on existing engines (Kubernetes manifests, KubeRay, Ray Serve).

Exporting never serves nor imports a handler: it reads the spec files as written, so the
manifests carry the spec itself and the pod resolves it (interpolation, env) at start-up.
"""
