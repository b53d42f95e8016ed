"""Going back to the previous generation: after a failed post-check, or when asked to.

The previous generation's root is made present first (mounted again if it is an overlay that
is not mounted), then `current` is switched to it in one rename, then the abandoned generation
is deleted. With no previous generation the node goes back to having no active root, as before
its first apply.
"""

from __future__ import annotations

import logging

from powernode.agent.modules.activate import ActivationOptions, remount
from powernode.agent.modules.errors import ActivationFailed
from powernode.agent.modules.generations import Generation, Generations

log = logging.getLogger(__name__)


def roll_back(
    generations: Generations, abandoned: Generation, options: ActivationOptions
) -> Generation | None:
    """Make the generation before `abandoned` current and delete `abandoned`; the one now
    active (None: no modules are active)."""
    previous = generations.previous(abandoned.number)
    if previous is not None:
        previous = remount(generations, previous, options)
    generations.switch(previous)
    if not generations.remove(abandoned.path):
        log.warning("generation %s is rolled back but could not be deleted", abandoned.number)
    return previous


def roll_back_current(generations: Generations, options: ActivationOptions) -> Generation | None:
    """Abandon the current generation for the one before it (call under `generations.lock()`)."""
    current = generations.current()
    if current is None:
        raise ActivationFailed(None, "there is no active generation to roll back")
    if generations.previous(current.number) is None:
        raise ActivationFailed(None, f"generation {current.number} has no previous generation")
    return roll_back(generations, current, options)
