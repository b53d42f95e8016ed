"""/v2: module artifacts over the OCI Distribution API (pull only), on both listeners.

Repositories are `modules/<name>`; tags are versions (`+` written `_`) and cosign's
`sha256-<hex>.sig` signature tags; referrers are listed by the OCI 1.1 referrers API. Answers
and errors follow the Distribution spec (`{"errors": [{"code", "message", "detail"}]}`), not
problem+json: `_DistributionRoute` is the one place /v2 maps errors. Refusals of credentials
(401, 403) are audited like every refused API request; not-found answers are not, since
registry clients probe for tags and referrers routinely.

Authentication is the listener's: `mount` includes this router with the dependencies the app
authenticates with (a bearer API token with read permission on the operator API, the node's
client certificate on the node API). On the operator API a 401 carries the Bearer challenge
of the Distribution token flow, whose realm `/v2/token` hands an API token given as the Basic
password (`skopeo --creds any:pn_...`, `docker login`) back as the bearer token; clients that
take a token directly (`skopeo --registry-token pn_...`) send it straight away. The routes
stay out of the operator API's OpenAPI document: the Distribution spec documents them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import IO, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi import params as fastapi_params
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute

from powernode.api import problems
from powernode.api.deps import SessionDep
from powernode.artifacts import store as registry
from powernode.artifacts.oci import digest_hex
from powernode.auth.roles import Permission, allows
from powernode.auth.tokens import authenticate
from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.errors import Category, Forbidden, Invalid, PowernodeError, Unauthorized
from powernode.modules.service import NAME_PATTERN
from powernode.modules.store import ContentStore

API_VERSION_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}
CHUNK = 1 << 20
MAX_TAGS_PAGE = 10_000
_NAME = re.compile(NAME_PATTERN)

_STATUS_BY_CODE = {
    "NAME_INVALID": 400,
    "DIGEST_INVALID": 400,
    "PAGINATION_NUMBER_INVALID": 400,
    "UNSUPPORTED": 405,
}
_CODE_BY_CATEGORY = {
    Category.NOT_FOUND: "NAME_UNKNOWN",
    Category.INVALID: "UNSUPPORTED",
    Category.CONFLICT: "UNKNOWN",
    Category.INVALID_TRANSITION: "UNKNOWN",
    Category.UNAUTHORIZED: "UNAUTHORIZED",
    Category.FORBIDDEN: "DENIED",
    Category.UNAVAILABLE: "UNAVAILABLE",
}


class NameInvalid(Invalid):
    registry_code = "NAME_INVALID"


class PaginationInvalid(Invalid):
    registry_code = "PAGINATION_NUMBER_INVALID"


class Unsupported(Invalid):
    registry_code = "UNSUPPORTED"


def distribution_error(request: Request, exc: PowernodeError) -> JSONResponse:
    """The Distribution spec's error document and status for a domain error."""
    code: str = getattr(exc, "registry_code", None) or _CODE_BY_CATEGORY[exc.category]
    if code in _STATUS_BY_CODE:
        status = _STATUS_BY_CODE[code]
    elif exc.category == Category.INVALID:
        status = 400
    else:
        status = problems.STATUS_BY_CATEGORY[exc.category]
    error = {"code": code, "message": exc.detail, "detail": exc.extra}
    headers = dict(API_VERSION_HEADERS)
    if status == 401 and getattr(request.app.state, "registry_token_service", False):
        realm = f"{request.base_url}v2/token"
        headers["WWW-Authenticate"] = f'Bearer realm="{realm}",service="powernode"'
    return JSONResponse({"errors": [error]}, status_code=status, headers=headers)


class _DistributionRoute(APIRoute):
    """Answers domain errors, including the authentication dependencies', as the spec does."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def distribution_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except PowernodeError as exc:
                response = distribution_error(request, exc)
                if response.status_code in (401, 403):
                    await problems.audit_refusal(request, response.status_code, exc.detail)
                return response

        return distribution_handler


router = APIRouter(route_class=_DistributionRoute, include_in_schema=False)
token_router = APIRouter(route_class=_DistributionRoute, include_in_schema=False)


def mount(app: FastAPI, *auth: fastapi_params.Depends, token_service: bool = False) -> None:
    """Serve /v2 on `app`, every route behind the `auth` dependencies; with `token_service`,
    also the token flow for bearer API tokens (see the module docstring)."""
    if token_service:
        app.state.registry_token_service = True
        app.include_router(token_router)
    app.include_router(router, dependencies=list(auth))


@token_router.get("/v2/token")
async def issue_token(request: Request, session: SessionDep) -> JSONResponse:
    """The token flow's endpoint: the API token sent as the Basic password (or as a bearer
    token), once checked, is the registry token."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    secret = value.strip()
    if scheme.lower() == "basic":
        try:
            secret = base64.b64decode(secret, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            secret = ""
    elif scheme.lower() != "bearer":
        secret = ""
    if not secret:
        raise Unauthorized("log in with an API token as the password (any user name)")
    principal = await authenticate(session, secret, request.app.state.clock)
    if not allows(principal.role, Permission.READ):
        raise Forbidden(f"role {principal.role} may not read modules")
    return JSONResponse({"token": secret, "access_token": secret}, headers=API_VERSION_HEADERS)


async def _context(request: Request, session: SessionDep) -> tuple[Database, ContentStore, Clock]:
    """What the registry reads with. The authentication's transaction (if any) ends here: a
    first pull may build for minutes, and its connection is better back in the pool."""
    await session.rollback()
    state = request.app.state
    return state.db, state.store, state.clock


Context = Annotated[tuple[Database, ContentStore, Clock], Depends(_context)]


def _module(name: str) -> str:
    if not _NAME.match(name):
        raise NameInvalid(f"{name!r} is not a module name: repositories are modules/<name>")
    return name


@router.api_route("/v2/", methods=["GET", "HEAD"])
async def version_check() -> JSONResponse:
    """The Distribution API base: 200 once the caller is authenticated."""
    return JSONResponse({}, headers=API_VERSION_HEADERS)


@router.api_route("/v2/modules/{name}/manifests/{reference}", methods=["GET", "HEAD"])
async def get_manifest(request: Request, context: Context, name: str, reference: str) -> Response:
    """A module artifact or signature manifest by tag or digest (built on first need)."""
    db, store, clock = context
    found = await registry.manifest(db, store, clock, _module(name), reference)
    headers = {
        **API_VERSION_HEADERS,
        "Docker-Content-Digest": found.digest,
        "ETag": f'"{found.digest}"',
        "Content-Length": str(len(found.data)),
    }
    body = b"" if request.method == "HEAD" else found.data
    return Response(body, media_type=found.media_type, headers=headers)


@router.api_route("/v2/modules/{name}/blobs/{digest}", methods=["GET", "HEAD"])
async def get_blob(request: Request, context: Context, name: str, digest: str) -> Response:
    """A config, layer or signature blob of the module, streamed from the content store."""
    db, store, clock = context
    size = await registry.blob_size(db, store, clock, _module(name), digest)
    headers = {
        **API_VERSION_HEADERS,
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Content-Length": str(size),
    }
    if request.method == "HEAD":
        return Response(media_type="application/octet-stream", headers=headers)
    handle = store.open(digest_hex(digest))
    return StreamingResponse(
        _chunks(handle), media_type="application/octet-stream", headers=headers
    )


async def _chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            yield chunk
    finally:
        handle.close()


@router.get("/v2/modules/{name}/referrers/{digest}")
async def get_referrers(request: Request, context: Context, name: str, digest: str) -> Response:
    """The signatures whose subject is `digest`, as an OCI image index (`?artifactType=`)."""
    db, store, _ = context
    artifact_type = request.query_params.get("artifactType")
    index = await registry.referrers(db, store, _module(name), digest, artifact_type)
    headers = dict(API_VERSION_HEADERS)
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return Response(index, media_type="application/vnd.oci.image.index.v1+json", headers=headers)


@router.get("/v2/modules/{name}/tags/list")
async def list_tags(request: Request, context: Context, name: str) -> JSONResponse:
    """Tags in lexical order; `n` and `last` page them, with a `Link` to the next page."""
    db, _, _ = context
    name = _module(name)
    tags = await registry.tags(db, name)
    last = request.query_params.get("last")
    if last is not None:
        tags = [tag for tag in tags if tag > last]
    limit = _page_size(request.query_params.get("n"))
    headers = dict(API_VERSION_HEADERS)
    if limit is not None and len(tags) > limit:
        tags = tags[:limit]
        after = quote(tags[-1], safe="") if tags else quote(last or "", safe="")
        headers["Link"] = f'</v2/modules/{name}/tags/list?n={limit}&last={after}>; rel="next"'
    return JSONResponse(
        {"name": f"{registry.REPOSITORY_PREFIX}{name}", "tags": tags}, headers=headers
    )


def _page_size(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) > MAX_TAGS_PAGE:
        raise PaginationInvalid(f"n must be a number from 0 to {MAX_TAGS_PAGE}, not {text!r}")
    return int(text)


@router.api_route("/v2/{path:path}", methods=["GET", "HEAD"])
async def unknown_repository(path: str) -> Response:
    raise registry.NameUnknown(f"/v2/{path} is not served: repositories are modules/<name>")


@router.api_route("/v2/{path:path}", methods=["POST", "PUT", "PATCH", "DELETE"])
async def read_only(path: str) -> Response:
    raise Unsupported(
        "this registry is read-only: module versions are imported with `powernode module "
        "import`, signatures uploaded to /api/v1/modules/<name>/versions/<version>/signatures"
    )
