"""The built-in transform plugins.

Each module here is a plugin registered by the manager from an internal list,
through the same hook and the same `statejax.extend` API a third party uses.
"""
