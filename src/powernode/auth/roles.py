"""Roles and the permissions each grants: viewer < operator < admin."""

from __future__ import annotations

import enum


class Permission(enum.StrEnum):
    """One thing an API caller may do."""

    READ = "read"
    """Read any resource and the event log."""
    OPERATE = "operate"
    """Run lifecycle actions; create and delete nodes, instances, tasks and templates."""
    OVERRIDE = "override"
    """Fire events normally reserved to the system (agent reports, lease outcomes)."""
    MANAGE_TOKENS = "manage_tokens"
    """Create, list and revoke API tokens."""
    MANAGE_PROVIDERS = "manage_providers"
    """Create, change and delete provider accounts and their catalogs."""
    MANAGE_TRUST = "manage_trust"
    """Set and delete the trust policies that say who may sign a module."""


class Role(enum.StrEnum):
    """A token's role; each role has every permission of the roles below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.ADMIN: frozenset(Permission),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]
