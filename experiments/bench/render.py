"""Rendering throughput: the procedural JAX renderer (jitted, on the device) beside the
file source (host reads + transfer to the device).

The file rows read the real files when ``$SPARSEJAX_DATA_DIR`` holds them; otherwise a
stand-in file in the real format is written to a temporary directory (a shrunken factor
grid filled with procedurally rendered images) and the row says so.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import jax
import numpy as np

from experiments.bench.timing import seconds_per_call
from sparsejax.data import FactorSpace, get_dataset
from sparsejax.data.catalog import SPECS, find_file
from sparsejax.data.files import SHAPES3D_VALUES, open_file

BATCH = 256
_STAND_IN_SIZES = {"dsprites": (3, 6, 10, 8, 8), "shapes3d": (4, 4, 4, 8, 4, 5)}


def _stand_in_file(name: str, root: Path):
    """A real-format file over a shrunken grid; returns (spec, path)."""
    import h5py

    spec = SPECS[name]
    spec = dataclasses.replace(spec, space=FactorSpace(spec.space.names, _STAND_IN_SIZES[name]))
    classes = spec.space.index_to_factors(np.arange(spec.space.num_points))
    imgs = np.asarray(jax.jit(spec.render_module.render)(classes.astype(np.int32)))
    if name == "dsprites":
        path = root / spec.file_names[0]
        latents = np.concatenate([np.zeros((len(classes), 1), np.int64), classes], 1)
        np.savez_compressed(path, imgs=imgs[..., 0].astype(np.uint8), latents_classes=latents)
    else:
        path = root / spec.file_names[0]
        labels = np.stack([SHAPES3D_VALUES[j][classes[:, j]] for j in range(6)], 1)
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=np.round(imgs * 255).astype(np.uint8),
                             chunks=(1, 64, 64, 3))
            f.create_dataset("labels", data=labels)
    return spec, path


def bench_render():
    for name in ("dsprites", "shapes3d"):
        ds = get_dataset(name, source="procedural")
        render = jax.jit(lambda key, ds=ds: ds.render(ds.sample_factors(key, BATCH)))
        keys = iter(jax.random.split(jax.random.key(0), 10_000))
        sec = seconds_per_call(lambda: render(next(keys)))
        yield {"dataset": name, "source": "procedural", "batch": BATCH,
               "images_per_s": round(BATCH / sec, 1)}

        with tempfile.TemporaryDirectory() as tmp:
            real = find_file(name, None)
            if real is not None:
                fds, note = get_dataset(name, source="file"), f"real file {real.name}"
            else:
                spec, path = _stand_in_file(name, Path(tmp))
                fds = open_file(spec, path)
                note = (f"stand-in {path.suffix} file over a {spec.space.num_points}-image grid "
                        "(no real file in $SPARSEJAX_DATA_DIR)")
            rng = np.random.default_rng(0)

            def load(fds=fds, rng=rng):
                f = rng.integers(0, fds.factor_sizes, (BATCH, fds.num_factors))
                return jax.device_put(fds.render(f))

            sec = seconds_per_call(load)
            yield {"dataset": name, "source": "file", "batch": BATCH,
                   "images_per_s": round(BATCH / sec, 1), "file": note}


CASES = {"render": bench_render}
