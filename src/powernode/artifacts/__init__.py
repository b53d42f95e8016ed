"""Module supply chain: modules as OCI artifacts, OCI image layouts, an OCI registry client.

This package's `__init__` imports nothing, so the agent can import `powernode.artifacts.layer`
(stdlib, zstandard and `powernode.errors` only) without the server stack.
"""
