"""Node labels and Kubernetes-style label selectors, compiled to SQL.

Keys: an optional DNS-subdomain prefix and `/`, then a name of up to 63 characters of
`[A-Za-z0-9._-]` starting and ending alphanumeric; values: the same, or empty.
Selector terms, comma-separated: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, not_, select

from powernode.errors import Invalid
from powernode.fleet.models import Node, NodeLabel

_NAME = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?"
KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
VALUE_RE = re.compile(rf"^({_NAME})?$")

_TERM_RE = re.compile(
    r"^\s*(?:(?P<absent>!)\s*(?P<akey>[^\s!=,()]+)"
    r"|(?P<key>[^\s!=,()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$"
)


def validate_labels(labels: dict[str, str], *, field: str = "labels") -> dict[str, str]:
    """`labels` unchanged, or Invalid naming the first bad key or value (as `field`)."""
    for key, value in labels.items():
        if not KEY_RE.match(key) or len(key) > 317:
            raise Invalid(
                f"label key {key!r} is not valid: use [prefix/]name, name up to 63 characters "
                "of letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
                field=field,
            )
        if not isinstance(value, str) or not VALUE_RE.match(value):
            raise Invalid(
                f"label value {value!r} for {key!r} is not valid: up to 63 characters of letters, "
                "digits, '.', '_' and '-', starting and ending with a letter or digit",
                field=field,
            )
    return labels


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def parse_selector(selector: str) -> list[Requirement]:
    """Parse a label selector; Invalid names the term that is wrong."""
    requirements: list[Requirement] = []
    if not selector.strip():
        return requirements
    for term in _split_terms(selector):
        match = _TERM_RE.match(term)
        if match is None:
            raise Invalid(
                f"label selector term {term.strip()!r} is not valid: use k=v, k!=v, "
                "k in (a,b), k notin (a,b), k or !k, separated by commas",
                field="selector",
            )
        if match["absent"]:
            req = Requirement(match["akey"], "!exists")
        elif match["op"]:
            req = Requirement(match["key"], "!=" if match["op"] == "!=" else "=", (match["value"],))
        elif match["setop"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            if not values:
                raise Invalid(
                    f"label selector term {term.strip()!r} has an empty set", field="selector"
                )
            req = Requirement(match["key"], match["setop"], values)
        else:
            req = Requirement(match["key"], "exists")
        validate_labels({req.key: ""}, field="selector")
        for value in req.values:
            validate_labels({req.key: value}, field="selector")
        requirements.append(req)
    return requirements


def _has(key: str, *conditions: Any) -> Any:
    return exists(
        select(NodeLabel.node_id).where(
            NodeLabel.node_id == Node.id, NodeLabel.key == key, *conditions
        )
    )


def selector_clause(selector: str) -> Any:
    """A WHERE clause on `Node` matching the selector (EXISTS subqueries on node_labels)."""
    clauses = []
    for req in parse_selector(selector):
        if req.op == "exists":
            clauses.append(_has(req.key))
        elif req.op == "!exists":
            clauses.append(not_(_has(req.key)))
        elif req.op == "=":
            clauses.append(_has(req.key, NodeLabel.value == req.values[0]))
        elif req.op == "in":
            clauses.append(_has(req.key, NodeLabel.value.in_(req.values)))
        elif req.op == "!=":
            # Kubernetes semantics: nodes without the key match `k!=v` too.
            clauses.append(not_(_has(req.key, NodeLabel.value == req.values[0])))
        else:  # notin
            clauses.append(not_(_has(req.key, NodeLabel.value.in_(req.values))))
    return and_(*clauses) if clauses else None
