"""Checkpoints with orbax: a train state (any pytree) plus a JSON record of where the run is.

Every model's checkpoint holds everything needed to continue exactly (for the hybrid:
parameters, optimiser and controller state, the raw RNG key and global step, which fix
every later batch, and the epoch's firing counts and loss sums), and in its metadata the
epoch position and the config. Saves are asynchronous (the device-to-host copy happens before ``save`` returns,
so donating the state to the next step is safe); the newest ``keep`` are kept. A state
whose loss went NaN/Inf is never saved, so the newest checkpoint is always a good one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from sparsejax.train.errors import CheckpointError


class Checkpointer:
    """Saves and restores ``(state, metadata)`` pairs under ``directory``.

    Checkpoints are numbered by global step. ``metadata`` is a JSON-able dict; the engine
    stores ``{"epoch": e, "step_in_epoch": j, "config": {...}}``.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self._mgr = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Start an asynchronous save numbered ``step`` (blocks on the previous save)."""
        if step in self._mgr.all_steps():
            return  # already saved (e.g. an interrupt right after an epoch's save)
        try:
            self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(meta)))
        except Exception as e:  # disk full, permissions, ...: name it, keep older ones
            raise CheckpointError(f"could not save the checkpoint of step {step} in "
                                  f"{self.directory}: {e}") from e

    def restore(self, abstract: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The state (placed as ``abstract``'s shardings say) and metadata at ``step``
        (default: the newest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"could not restore step {step} from {self.directory} "
                                  f"(incomplete or written by a different model?): {e}") from e
        return out["state"], dict(out["meta"])

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of ``step`` (default: newest) without loading the state."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        try:
            self._mgr.wait_until_finished()
        except Exception as e:
            raise CheckpointError(f"a checkpoint save in {self.directory} failed: {e}") from e

    def close(self) -> None:
        self.wait()
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

