"""``get_dataset``: the named datasets and how each source is found."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax

from sparsejax.data import dsprites, shapes3d
from sparsejax.data.dataset import SOURCE_CHOICES, FactorDataset
from sparsejax.data.factors import FactorSpace

DATA_DIR_ENV = "SPARSEJAX_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str
    space: FactorSpace
    observation_shape: tuple[int, int, int]
    render_module: object  # module with a jit-able ``render(factors) -> images``
    file_names: tuple[str, ...]  # real files, in order of preference
    tfds_name: str


SPECS: dict[str, DatasetSpec] = {
    "dsprites": DatasetSpec(
        "dsprites", dsprites.SPACE, dsprites.OBSERVATION_SHAPE, dsprites,
        ("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
         "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"),
        "dsprites"),
    "shapes3d": DatasetSpec(
        "shapes3d", shapes3d.SPACE, shapes3d.OBSERVATION_SHAPE, shapes3d,
        ("3dshapes.h5",), "shapes3d"),
}
DATASETS = tuple(SPECS)  # the dataset names, in the order studies list them


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(SPECS)}")
    return SPECS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``data_dir`` if given, else ``$SPARSEJAX_DATA_DIR`` if set, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def find_file(name: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The first real file of dataset ``name`` present in the data directory, or None."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return None
    for fname in _spec(name).file_names:
        for candidate in (root / fname, root / name / fname):
            if candidate.is_file():
                return candidate
    return None


def get_dataset(name: str, source: str = "auto", data_dir: str | os.PathLike | None = None,
                *, verbose: bool = False) -> FactorDataset:
    """A factor dataset by name: ``"dsprites"`` or ``"shapes3d"``.

    Args:
      name: dataset name.
      source: ``"procedural"`` (JAX renderer, jit-able; the embedded default), ``"file"``
        (the real files in ``data_dir``), ``"tfds"`` (a prepared TFDS copy in ``data_dir``)
        or ``"auto"`` (a real file if one is found, else a TFDS copy, else procedural).
      data_dir: where real copies live; defaults to ``$SPARSEJAX_DATA_DIR``. For the file
        source either the file itself or a directory holding it
        (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` or ``.hdf5``; ``3dshapes.h5``).
      verbose: print which source was chosen (``"auto"`` always logs it).
    """
    spec = _spec(name)
    if source not in SOURCE_CHOICES:
        raise ValueError(f"unknown source {source!r}: expected one of {list(SOURCE_CHOICES)}")
    root = resolve_data_dir(data_dir)
    if root is not None and not root.exists() and source != "procedural":
        # a typo must not fall back silently to the procedural renderer
        given = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        raise FileNotFoundError(f"{given} {root} does not exist: expected the directory (or "
                                f"file) holding the real {name} data, or no data dir for "
                                "the procedural renderer")
    if source == "auto":
        from sparsejax.data import tfds_source

        if find_file(name, data_dir) is not None or _is_file(data_dir):
            source = "file"
        elif tfds_source.find_prepared(spec.tfds_name, resolve_data_dir(data_dir)):
            source = "tfds"
        else:
            source = "procedural"
        verbose = True
    ds = _open(spec, source, data_dir)
    if verbose:
        where = f" from {ds.location}" if ds.location else ""
        print(f"[sparsejax.data] {name}: using the {source} source{where}", flush=True)
    return ds


def _is_file(data_dir) -> bool:
    return data_dir is not None and Path(data_dir).is_file()


def _open(spec: DatasetSpec, source: str, data_dir) -> FactorDataset:
    if source == "procedural":
        return FactorDataset(spec.name, "procedural", spec.space, spec.observation_shape,
                             jax.jit(spec.render_module.render), on_device=True,
                             masks_fn=jax.jit(spec.render_module.render_masks))
    if source == "file":
        from sparsejax.data import files

        path = Path(data_dir) if _is_file(data_dir) else find_file(spec.name, data_dir)
        if path is None:
            root = resolve_data_dir(data_dir)
            raise FileNotFoundError(
                f"no {spec.name} file found in {root if root else '(no data_dir given and $'
                + DATA_DIR_ENV + ' unset)'}: expected one of {list(spec.file_names)}")
        return files.open_file(spec, path)
    from sparsejax.data import tfds_source

    return tfds_source.open_tfds(spec, resolve_data_dir(data_dir))
