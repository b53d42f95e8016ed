"""Template and its ordered module references.

A reference names a module and a version as text; the composition issue adds the module tables
and a foreign key from `template_modules` to them, without changing this shape.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.db.base import Base, IdMixin


class Template(IdMixin, Base):
    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    modules: Mapped[list[TemplateModule]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="TemplateModule.position"
    )
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class TemplateModule(Base):
    """Position `position` (0 = lowest layer) of a template's module stack."""

    __tablename__ = "template_modules"

    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(primary_key=True)
    module_name: Mapped[str] = mapped_column(String(100))
    module_version: Mapped[str] = mapped_column(String(64))
