"""The transform registry: protocol, engine, hookspecs and plugin manager (private).

Plugins use the public face of this package, `statejax.extend`.
"""
