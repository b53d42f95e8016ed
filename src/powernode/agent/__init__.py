"""The on-node agent: finds its seed and identity, enrolls, heartbeats, leases and runs tasks.

It imports nothing of the server stack (no FastAPI, SQLAlchemy, pydantic-settings); a test
enforces it. Protocol: docs/node-protocol.md.
"""
