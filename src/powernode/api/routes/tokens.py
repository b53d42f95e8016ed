"""/api/v1/tokens"""

from __future__ import annotations

from fastapi import APIRouter, status

from powernode.api.deps import Cursor, Limit, SessionDep, TokenAdmin
from powernode.auth import tokens
from powernode.auth.tokens import TokenCreate, TokenCreated, TokenOut
from powernode.db.crud import commit, parse_ref
from powernode.schemas import PageOut

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("")
async def list_tokens(
    session: SessionDep, _: TokenAdmin, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[TokenOut]:
    page = await tokens.list_tokens(session, limit=limit, cursor=cursor)
    return PageOut(
        items=[TokenOut.model_validate(t) for t in page.items], next_cursor=page.next_cursor
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_token(session: SessionDep, caller: TokenAdmin, spec: TokenCreate) -> TokenCreated:
    """Create a token. The `token` field is shown in this response only."""
    row, secret = await tokens.create_token(session, caller.ctx, spec)
    await commit(session)
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=secret)


@router.post("/{token}/revoke")
async def revoke_token(session: SessionDep, caller: TokenAdmin, token: str) -> TokenOut:
    """Revoke a token by its row id or its public token id."""
    row = await tokens.revoke_token(session, caller.ctx, parse_ref(token) or token)
    await commit(session)
    return TokenOut.model_validate(row)
