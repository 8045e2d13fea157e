"""Checkpoints with orbax: a train state (any pytree) plus a JSON record of where the run is.

Every model's checkpoint holds everything needed to continue exactly (for the hybrid:
parameters, optimiser and controller state, the raw RNG key and global step, which fix
every later batch, and the epoch's firing counts and loss sums), and in its metadata the
epoch position, the config and a SHA-256 checksum of the state's arrays.

What a resume trusts is checked: a restored state must match its checksum, and a
checkpoint that does not restore or does not match is skipped with one line saying so,
in favour of the next older good one (and replaced when the run gets back to its step).
Saves complete before ``save`` returns, so a failed write (a full disk) is reported at the
step that failed, with the older checkpoints intact; the free space is checked first. The
newest ``keep`` checkpoints are kept. A state whose loss went NaN/Inf is never saved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from sparsejax.train.errors import CheckpointError

CHECKSUM = "checksum"  # the metadata entry that holds the state's checksum


def _host_leaf(leaf) -> np.ndarray:
    """A host copy of one leaf (a replicated array's local copy on a multi-host mesh)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_shards[0].data
    return np.asarray(jax.device_get(leaf))


def state_checksum(state: Any) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order (hex digest)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        # (ascontiguousarray makes a scalar [1]: kept, so older checksums still verify)
        a = np.ascontiguousarray(leaf if isinstance(leaf, np.ndarray) else _host_leaf(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _as_placed(state: Any, abstract: Any) -> Any:
    """``state`` as restored, checked against ``abstract`` leaf by leaf (shape and dtype:
    a host copy restores whatever shape was saved) and placed as jax arrays (a leaf with
    no sharding in ``abstract`` comes back as numpy; ``device_put`` moves it to the default
    device without compiling a conversion per shape, as ``jnp.asarray`` would)."""
    def place(x, a):
        if tuple(np.shape(x)) != tuple(a.shape) or np.dtype(x.dtype) != np.dtype(a.dtype):
            raise CheckpointError(f"a saved array is {np.dtype(x.dtype)}{list(np.shape(x))}, "
                                  f"the model expects {np.dtype(a.dtype)}{list(a.shape)}")
        return jax.device_put(x) if isinstance(x, np.ndarray) else x

    return jax.tree.map(place, state, abstract)


def _nbytes(state: Any) -> int:
    return sum(int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(state))


def _first_line(e: BaseException, most: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= most else line[:most] + "..."


class Checkpointer:
    """Saves and restores ``(state, metadata)`` pairs under ``directory``.

    Checkpoints are numbered by global step. ``metadata`` is a JSON-able dict; the engine
    stores ``{"epoch": e, "step_in_epoch": j, "config": {...}}`` and this class adds the
    state's checksum.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, create: bool = True):
        self.directory = Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {self.directory} (no such directory)")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                               enable_async_checkpointing=False)
        self._mgr = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))
        self.damaged: set[int] = set()  # steps that failed to restore or verify

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save ``state`` as checkpoint ``step``; returns when it is on disk."""
        if step in self.damaged:  # the run is back at a damaged checkpoint's step: replace it
            self._mgr.delete(step)
            self.damaged.discard(step)
        elif step in self._mgr.all_steps():
            return  # already saved (e.g. an interrupt right after an epoch's save)
        need = 2 * _nbytes(state) + (16 << 20)  # the arrays, orbax's temporary copy, metadata
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise CheckpointError(
                f"not enough free space to save the checkpoint of step {step} in "
                f"{self.directory}: about {need >> 20} MiB needed, {free >> 20} MiB free; the "
                f"older checkpoints are kept. Free some space and continue with --resume")
        # The state is replicated (sparsejax.train.mesh), so one host copy is the whole
        # state: it is checksummed and written as is (orbax writes numpy leaves from process
        # 0). Handing orbax the device arrays instead makes it slice each replicated array
        # across the replicas with one small eager program per leaf shape and device.
        host = jax.tree.map(_host_leaf, state)
        meta = {**meta, CHECKSUM: state_checksum(host)}
        try:
            self._mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host),
                                                          meta=ocp.args.JsonSave(meta)))
            self._mgr.wait_until_finished()
        except Exception as e:  # disk full, permissions, ...: name it, keep older ones
            raise CheckpointError(f"could not save the checkpoint of step {step} in "
                                  f"{self.directory}: {_first_line(e)}; the older checkpoints "
                                  "are kept") from e

    def restore(self, abstract: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The state (placed as ``abstract``'s shardings say) and metadata at ``step``, or by
        default the newest checkpoint that restores and matches its checksum (older ones are
        tried in turn; each one skipped is named on stderr)."""
        steps = sorted(self.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        reasons = []
        for s in steps:
            try:
                out = self._mgr.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
                state, meta = _as_placed(out["state"], abstract), dict(out["meta"])
                want = meta.get(CHECKSUM)
                if want is not None and state_checksum(state) != want:
                    raise CheckpointError("its arrays do not match the checksum saved with them")
            except Exception as e:
                reasons.append(f"step {s}: {_first_line(e)}")
                self.damaged.add(s)
                if s != steps[-1]:
                    print(f"[sparsejax] checkpoint {s} in {self.directory} is damaged "
                          f"({_first_line(e)}); using the next older one", file=sys.stderr)
                continue
            return state, meta
        raise CheckpointError(f"no checkpoint in {self.directory} could be restored (damaged, "
                              f"or written by a different model): " + "; ".join(reasons))

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata of ``step`` (default: the newest readable one), without the
        state."""
        steps = sorted(self.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        for s in steps:
            try:
                out = self._mgr.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                return dict(out["meta"])
            except Exception:
                continue
        raise CheckpointError(f"no checkpoint in {self.directory} has readable metadata")

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        try:
            self._mgr.wait_until_finished()
        except Exception as e:
            raise CheckpointError(f"a checkpoint save in {self.directory} failed: "
                                  f"{_first_line(e)}") from e

    def close(self) -> None:
        self.wait()
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
