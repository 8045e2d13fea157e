"""A prepared TFDS copy (ArrayRecord), read with random access through ``tfds.data_source``.

TFDS shuffles records when it prepares a dataset, so the first open reads every record's
class labels (images left undecoded) to map grid points to records, and caches that map
beside the copy. No TensorFlow is needed: ``tfds.data_source`` reads ArrayRecord alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsejax.data.dataset import FactorDataset
from sparsejax.atomic_io import save_npy_atomic
from sparsejax.data.records import DataFileError, cache_path, point_to_row, rows_for

_BATCH = 1024


def find_prepared(tfds_name: str, data_dir: Path | None) -> bool:
    """True when ``data_dir/<tfds_name>/<version>/dataset_info.json`` exists."""
    if data_dir is None or not (Path(data_dir) / tfds_name).is_dir():
        return False
    return any((Path(data_dir) / tfds_name).glob("*/dataset_info.json"))


def open_tfds(spec, data_dir: Path | None) -> FactorDataset:
    """A TFDS-backed :class:`FactorDataset` for ``spec`` (a ``catalog.DatasetSpec``)."""
    if data_dir is None:
        raise DataFileError(f"the tfds source needs data_dir (a directory holding a prepared "
                            f"'{spec.tfds_name}' copy), or $SPARSEJAX_DATA_DIR")
    import tensorflow_datasets as tfds

    where = f"TFDS '{spec.tfds_name}' in {data_dir}"
    try:
        source = tfds.data_source(spec.tfds_name, split="train", data_dir=str(data_dir),
                                  download=False)
        labels_only = tfds.data_source(spec.tfds_name, split="train", data_dir=str(data_dir),
                                       download=False,
                                       decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as e:
        raise DataFileError(f"{where}: could not open a prepared copy ({type(e).__name__}: {e}); "
                            f"prepare it with `tfds build {spec.tfds_name} --data_dir {data_dir} "
                            "--file_format array_record` on a machine with TensorFlow") from None
    classes = _classes(spec, labels_only, Path(data_dir) / spec.tfds_name, where)
    rows_M = point_to_row(spec.space, classes, where)

    def render(factors_NxF):
        rows_N = rows_for(factors_NxF, spec.space, rows_M)
        records = source.__getitems__([int(r) for r in rows_N])
        imgs = np.stack([np.asarray(r["image"]) for r in records]).astype(np.float32)
        if spec.name == "shapes3d":
            imgs /= 255.0  # dSprites stores {0, 1}
        return imgs.reshape(len(rows_N), *spec.observation_shape)

    return FactorDataset(spec.name, "tfds", spec.space, spec.observation_shape, render,
                         on_device=False, location=where)


def _classes(spec, source, root: Path, where: str) -> np.ndarray:
    """Class labels ``[R, F]`` of every record, cached after the first full read."""
    keys = [f"label_{n}" for n in spec.space.names]
    cache = cache_path(root / "sparsejax_classes", f"-{len(source)}.npy") if root.is_dir() else None
    if cache is not None and cache.exists():
        classes = np.load(cache, allow_pickle=False)
        if classes.shape == (len(source), len(keys)):
            return classes
    from tqdm.auto import tqdm

    out = np.empty((len(source), len(keys)), np.int64)
    for start in tqdm(range(0, len(source), _BATCH), desc=f"indexing {where}", unit="batch",
                      disable=len(source) <= 10 * _BATCH):
        records = source.__getitems__(list(range(start, min(start + _BATCH, len(source)))))
        try:
            out[start:start + len(records)] = [[r[k] for k in keys] for r in records]
        except KeyError as e:
            raise DataFileError(f"{where}: records lack the label {e}; expected {keys}") from None
    if cache is not None:
        save_npy_atomic(cache, out)
    return out
