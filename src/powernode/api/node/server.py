"""Running the operator API and the node API side by side in one process (`serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import uvicorn
from fastapi import FastAPI

from powernode.api.node.tls import PeerCertificateProtocol
from powernode.pki.runtime import TlsFiles


def node_server_config(
    node_app: FastAPI, tls: TlsFiles, *, host: str, port: int, log_level: str
) -> uvicorn.Config:
    """TLS with client certificates verified against our CA when presented (CERT_OPTIONAL:
    enrollment comes without one); a certificate from any other CA fails the handshake."""
    return uvicorn.Config(
        node_app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",  # the operator app's lifespan owns the shared state
        http=PeerCertificateProtocol,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_ca_certs=str(tls.client_ca),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        proxy_headers=False,
        timeout_keep_alive=75,  # agents long-poll and beat on kept-alive connections
    )


async def serve_both(operator: uvicorn.Config, node: uvicorn.Config) -> None:
    """Start the operator API first (its lifespan opens the shared state), then the node API;
    stop both when either stops."""
    operator_server = uvicorn.Server(operator)
    node_server = uvicorn.Server(node)
    # Only the operator server handles SIGTERM/SIGINT; the node server stops with it.
    node_server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    operator_task = asyncio.create_task(operator_server.serve())
    while not operator_server.started:
        if operator_task.done():
            await operator_task
            return
        await asyncio.sleep(0.05)
    node_task = asyncio.create_task(node_server.serve())
    done, _ = await asyncio.wait({operator_task, node_task}, return_when=asyncio.FIRST_COMPLETED)
    operator_server.should_exit = True
    node_server.should_exit = True
    await asyncio.gather(operator_task, node_task, return_exceptions=True)
    for task in done:
        task.result()
