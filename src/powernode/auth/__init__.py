"""API tokens, roles and permissions for the operator API."""
