"""Node keys and certificate signing requests (ECDSA P-256, PKCS#8, CN and URI SAN = node).

`key_and_csr()` does the work in-process. The agent calls `key_and_csr_in_child()` instead, which
runs this module as `python -m powernode.agent.pki NODE_ID` and reads
`{"key": PEM, "csr": PEM}` from its stdout: `cryptography` then never stays resident in the
long-running agent (it costs about 8 MB of RSS), and enrollment or renewal, which happen rarely,
pay for it only while they run. The key travels over a private pipe, never over the network.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

from powernode.agent.errors import AgentError

NODE_URI = "powernode://node/{node_id}"


@dataclass(frozen=True)
class KeyAndCsr:
    """A fresh private key (PKCS#8 PEM) and a CSR for it (PEM)."""

    key_pem: str
    csr_pem: str


def key_and_csr(node_id: str) -> KeyAndCsr:
    """A new ECDSA P-256 key and a CSR with CN = `node_id` and URI SAN powernode://node/<id>."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(NODE_URI.format(node_id=node_id))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return KeyAndCsr(key_pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii"))


async def key_and_csr_in_child(node_id: str) -> KeyAndCsr:
    """`key_and_csr(node_id)` computed by a child Python process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "powernode.agent.pki",
        node_id,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        message = err.decode("utf-8", errors="replace").strip()[-500:]
        raise AgentError(f"key generation failed (exit {proc.returncode}): {message}")
    doc = json.loads(out)
    return KeyAndCsr(str(doc["key"]), str(doc["csr"]))


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m powernode.agent.pki NODE_ID", file=sys.stderr)
        return 2
    made = key_and_csr(argv[0])
    json.dump({"key": made.key_pem, "csr": made.csr_pem}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
