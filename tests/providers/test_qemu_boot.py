"""One real boot under TCG: a qemu node created through the API boots Debian's kernel with a
busybox initramfs that reads its seed from fw_cfg, gets an address by DHCP, reaches the node
API's forwarded address (a TCP server on the host standing in for it), cannot reach the host
any other way (restrict=on), and powers off; the console log, read through the API, shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socketserver
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from powernode.providers.qemu_runner import VmFiles, _alive_vm
from powernode.testing import free_port
from tests.providers import guest
from tests.providers.conftest import QemuApi, qemu_settings, serving
from tests.providers.factories import register_artifact

MISSING = [
    tool
    for tool in ("qemu-system-x86_64", "socat", "apt-get", "dpkg-deb", "mkfs.ext4")
    if shutil.which(tool) is None
] + ([] if guest.BUSYBOX.exists() else ["busybox-static"])
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")

BOOT_TIMEOUT_S = 60.0

SCRIPT = """
echo "PN-SEED-SHA256=$(sha256sum /sys/firmware/qemu_fw_cfg/by_name/opt/powernode/seed/raw \
  | cut -d' ' -f1)"
cat > /udhcpc.sh <<'EOF'
#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
echo "PN-ADDRESS=$ip"
EOF
chmod +x /udhcpc.sh
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -s /udhcpc.sh
echo "PN-FORWARDED=$(echo hello | nc -w 5 @GUEST@ @PORT@)"
if echo hello | nc -w 3 10.0.2.2 @PORT@; then echo PN-HOST=reached; else echo PN-HOST=blocked; fi
echo PN-DONE
"""


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.server.lines.append(line)  # type: ignore[attr-defined]
        self.wfile.write(b"node-api says " + line)


@pytest.fixture
def node_api_stand_in() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 where the node API would listen: answers each line."""
    port = free_port()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), _Echo)
    server.lines = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port, server.lines  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def real_qemu_api(
    migrated_db_url: str, tmp_path: Path, node_api_stand_in: tuple[int, list[bytes]]
) -> AsyncIterator[QemuApi]:
    """The app with the real runner, forwarding guests to the stand-in; kills any VM left."""
    port, _ = node_api_stand_in
    data = tmp_path / "data"
    settings = qemu_settings(data, migrated_db_url, qemu_runner="real", node_port=port)
    try:
        async with serving(settings) as q:
            yield q
    finally:
        for pidfile in (data / "nodes").glob("*/qemu.pid"):
            pid = _alive_vm(VmFiles(pidfile.parent))
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def kernel() -> guest.Kernel:
    return guest.debian_kernel("amd64")


async def test_a_qemu_node_boots_reads_its_seed_and_reaches_only_the_node_api(
    real_qemu_api: QemuApi,
    node_api_stand_in: tuple[int, list[bytes]],
    kernel: guest.Kernel,
    tmp_path: Path,
) -> None:
    q = real_qemu_api
    port, lines = node_api_stand_in
    script = SCRIPT.replace("@GUEST@", q.settings.qemu_guest_address).replace("@PORT@", str(port))
    initrd = await asyncio.to_thread(guest.initramfs, kernel, script, tmp_path / "initrd.cpio")
    await register_artifact(
        q.api.db,
        q.data_dir,
        uuid.UUID(q.template_id),
        files={"vmlinuz": kernel.vmlinuz.read_bytes(), "initramfs.img": initrd.read_bytes()},
        details={"cmdline": "console=ttyS0 quiet panic=-1"},
    )
    body = {"name": "vm-1", "template_id": q.template_id, "provider_account_id": q.account_id}
    node = await q.api.ok("POST", "/nodes", json=body)
    assert (node["state"], node["failure_reason"]) == ("provisioning", None)
    vm = VmFiles(q.data_dir / "nodes" / node["id"])
    seed = (vm.directory / "seed.json").read_bytes()
    assert json.loads(seed)["urls"] == [f"https://10.0.2.100:{port}"]
    status = q.api.app.state.providers.status("qemu", uuid.UUID(node["id"]))
    assert status["running"] is True
    assert status["accel"] == "tcg"

    console = ""
    async with asyncio.timeout(BOOT_TIMEOUT_S):
        while "PN-DONE" not in console or _alive_vm(vm) is not None:
            await asyncio.sleep(0.5)
            console = (await q.api.call("GET", "/nodes/vm-1/console")).text
    found = dict(re.findall(r"^(PN-[A-Z0-9-]+)=(.*?)\r?$", console, re.MULTILINE))
    assert found["PN-SEED-SHA256"] == hashlib.sha256(seed).hexdigest()
    assert found["PN-ADDRESS"].startswith("10.0.2.")
    assert found["PN-FORWARDED"] == "node-api says hello"
    assert found["PN-HOST"] == "blocked"
    assert lines == [b"hello\n"]  # exactly one connection came through: the forwarded one

    gone = await q.api.ok("POST", "/nodes/vm-1/actions/terminate")
    assert gone["state"] == "terminated"
    assert not (vm.directory / "state.img").exists()
    assert "PN-DONE" in (await q.api.call("GET", "/nodes/vm-1/console")).text
