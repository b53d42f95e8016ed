"""The operator API (`/api/v1`) and health endpoints."""
