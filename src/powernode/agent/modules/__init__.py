"""Verified module activation on the node (the `apply_modules` task kind).

`apply.apply_modules` runs the stages, each its own module:

- `request`: the payload, checked (the agent carries no pydantic);
- `pull`: artifact and signatures into a staging OCI layout (registry or `oci:DIR:TAG`);
- `verify`: digest, signatures against the module's trust policy, the layer read by the safe
  reader and extracted, every file's digests;
- `activate`: the generation's root (read-only overlay mount, else a materialized tree), sealed
  with fs-verity where the filesystem has it;
- `generations`: `<state>/modules/generations/<n>/` and the atomic `current` link, pruning;
- `rollback`: back to the previous generation;
- `postcheck`: the check a new generation must pass to stay.

Imports cryptography and zstandard: the executor imports this package only when a task runs,
so an idle agent does not carry them. Nothing here imports the server stack.
"""

# Before anything here imports httpx (through the registry client): the agent's client keeps
# httpx's optional command line, and with it click and rich, from loading.
from powernode.agent import client as _client  # noqa: F401
