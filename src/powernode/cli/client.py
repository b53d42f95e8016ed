"""HTTP client for the CLI: finds the server and token, turns problem documents into CliError.

Resolution order: POWERNODE_URL / POWERNODE_TOKEN (or flags), then the credentials file that
`powernode init` wrote in the data directory, then http://127.0.0.1:8080.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from powernode.errors import Category
from powernode.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8080"


class CliError(Exception):
    """A failure to report as one line on stderr with a category-specific exit code."""

    def __init__(self, message: str, category: Category | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.category = category


_CATEGORY_BY_STATUS = {
    401: Category.UNAUTHORIZED,
    403: Category.FORBIDDEN,
    404: Category.NOT_FOUND,
    409: Category.CONFLICT,
    422: Category.INVALID,
    503: Category.UNAVAILABLE,
}


def resolve(settings: Settings) -> tuple[str, str | None]:
    """The server URL and token the CLI should use."""
    url, token = settings.url, settings.token
    path = settings.cli_credentials_path
    if (url is None or token is None) and path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {path}: {exc}; run 'powernode init' again") from exc
        url = url or stored.get("url")
        token = token or stored.get("token")
    return (url or DEFAULT_URL).rstrip("/"), token


class ApiClient:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.base_url, token = resolve(settings)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method,
                f"/api/v1{path}",
                params=clean,
                json=json_body,
                content=content,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise CliError(
                f"cannot reach the control plane at {self.base_url} ({exc}); is "
                "'powernode serve' running? Set POWERNODE_URL to point elsewhere.",
                Category.UNAVAILABLE,
            ) from exc
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _error(self, response: httpx.Response) -> CliError:
        category = _CATEGORY_BY_STATUS.get(response.status_code)
        try:
            body = response.json()
            message = body.get("detail") or body.get("title") or response.reason_phrase
        except ValueError:
            message = response.text.strip() or response.reason_phrase
        if response.status_code == 401:
            message += " (set POWERNODE_TOKEN or run 'powernode init')"
        return CliError(f"{message} [HTTP {response.status_code}]", category)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.request("POST", path, json_body=body, params=params)

    def upload(self, path: str, body: Any, *, content_type: str, **params: Any) -> Any:
        """POST a file-like body (streamed) with its content type."""
        return self.request(
            "POST", path, params=params, content=body, headers={"Content-Type": content_type}
        )

    def download(self, path: str, target: Any) -> None:
        """Stream GET `path` into the binary file `target`."""
        try:
            with self._http.stream("GET", f"/api/v1{path}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                for chunk in response.iter_bytes(1 << 20):
                    target.write(chunk)
        except httpx.HTTPError as exc:
            raise CliError(f"download of {path} failed: {exc}", Category.UNAVAILABLE) from exc

    def exists(self, path: str) -> bool:
        """HEAD `path`: True on 200, False on 404, an error otherwise."""
        try:
            response = self._http.head(f"/api/v1{path}")
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.base_url}: {exc}", Category.UNAVAILABLE) from exc
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise self._error(response)
        return True

    def put(self, path: str, body: Any, **params: Any) -> Any:
        return self.request("PUT", path, json_body=body, params=params)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json_body=body)

    def patch_at(self, path: str, version: int | None, changes: dict[str, Any]) -> Any:
        """PATCH `changes` (None values left out) at `version`, or at the version read now.

        An explicit `--version` makes a stale edit fail (409); without it the CLI edits what it
        just read, which still refuses a write that races another between the two calls.
        """
        expected = version if version is not None else self.get(path)["version"]
        body = {k: v for k, v in changes.items() if v is not None}
        return self.patch(path, {"version": expected, **body})

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=params)

    def paginate(self, path: str, *, limit: int | None = None, **params: Any) -> list[Any]:
        """Every item of a list endpoint (or the first `limit`), following cursors."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            page_size = min(1000, limit - len(items)) if limit is not None else 1000
            page = self.get(path, limit=page_size, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or (limit is not None and len(items) >= limit):
                return items
