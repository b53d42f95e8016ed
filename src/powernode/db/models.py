"""Imports every model so `Base.metadata` is complete (for Alembic and tests)."""

from powernode.artifacts.models import ModuleArtifact, ModuleSignature, ModuleTrustPolicy
from powernode.auth.models import ApiToken
from powernode.db.base import Base
from powernode.events.models import FleetEvent
from powernode.fleet.leases import NodeLease
from powernode.fleet.models import Node, NodeInstance, NodeLabel, Task
from powernode.images.models import BootArtifact
from powernode.modules.models import Module, ModuleVersion
from powernode.pki.models import BootstrapToken, CertificateAuthorityRow, NodeCertificate
from powernode.providers.models import InstanceType, ProviderAccount, Region, Zone
from powernode.templates.models import Template, TemplateModule

__all__ = [
    "ApiToken",
    "Base",
    "BootArtifact",
    "BootstrapToken",
    "CertificateAuthorityRow",
    "FleetEvent",
    "InstanceType",
    "Module",
    "ModuleArtifact",
    "ModuleSignature",
    "ModuleTrustPolicy",
    "ModuleVersion",
    "Node",
    "NodeCertificate",
    "NodeInstance",
    "NodeLabel",
    "NodeLease",
    "ProviderAccount",
    "Region",
    "Task",
    "Template",
    "TemplateModule",
    "Zone",
]
