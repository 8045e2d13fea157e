"""The real dataset files, read lazily.

- dSprites ``.npz``: a deflated zip. ``imgs`` is streamed once into a cached ``.npy``
  beside the file (or under ``~/.cache/sparsejax``) and memory-mapped from then on; the
  class labels are read without unpickling anything (``allow_pickle=False``; the pickled
  ``metadata`` entry is never touched).
- dSprites ``.hdf5`` and Shapes3D ``3dshapes.h5``: h5py datasets, read per batch.

Factor indices follow the procedural source's order, so a study switches source with
one flag. dSprites drops the constant colour factor; Shapes3D's float labels are mapped
to class indices through the known value grids.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from sparsejax.data.dataset import FactorDataset
from sparsejax.data.records import (DataFileError, cache_path, point_to_row, read_rows,
                                    rows_for)

# Value grids of Shapes3D's float labels, in storage order (the 3dshapes README,
# github.com/deepmind/3d-shapes).
SHAPES3D_VALUES = (
    np.linspace(0.0, 0.9, 10),       # floor hue
    np.linspace(0.0, 0.9, 10),       # wall hue
    np.linspace(0.0, 0.9, 10),       # object hue
    np.linspace(0.75, 1.25, 8),      # scale
    np.arange(4.0),                  # shape
    np.linspace(-30.0, 30.0, 15),    # orientation (degrees)
)


def open_file(spec, path: str | Path) -> FactorDataset:
    """A file-backed :class:`FactorDataset` for ``spec`` (a ``catalog.DatasetSpec``)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file; expected one of {list(spec.file_names)}")
    suffix = path.suffix.lower()
    if spec.name == "dsprites" and suffix == ".npz":
        images, classes = _dsprites_npz(path)
    elif spec.name == "dsprites" and suffix in (".hdf5", ".h5"):
        images, classes = _dsprites_hdf5(path)
    elif spec.name == "shapes3d" and suffix in (".h5", ".hdf5"):
        images, classes = _shapes3d_h5(path)
    else:
        raise DataFileError(f"{path}: cannot read a {spec.name} file with suffix {suffix!r}; "
                            f"expected one of {list(spec.file_names)}")
    expected = spec.observation_shape[:2] if spec.name == "dsprites" else spec.observation_shape
    _check_shape(path, "images", images.shape, (classes.shape[0], *expected))
    rows_M = point_to_row(spec.space, classes, str(path))
    scale = 1.0 if spec.name == "dsprites" else 1.0 / 255.0  # dSprites stores {0, 1}

    def render(factors_NxF):
        rows_N = rows_for(factors_NxF, spec.space, rows_M)
        imgs = read_rows(images, rows_N).astype(np.float32) * np.float32(scale)
        return imgs.reshape(len(rows_N), *spec.observation_shape)

    return FactorDataset(spec.name, "file", spec.space, spec.observation_shape, render,
                         on_device=False, location=str(path))


def _check_shape(path, key, found, expected):
    if tuple(found) != tuple(expected):
        raise DataFileError(f"{path}: '{key}' has shape {tuple(found)}, expected "
                            f"{tuple(expected)}")


def _unreadable(path: Path, err: Exception, what: str) -> DataFileError:
    return DataFileError(f"{path}: could not be read as {what} ({type(err).__name__}: {err}); "
                         "the file may be truncated or corrupt: download it again")


# -- dSprites ------------------------------------------------------------------------------
def _dsprites_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in ("imgs", "latents_classes"):
                if key not in npz.files:
                    raise DataFileError(f"{path}: no '{key}' array; found {npz.files}, expected "
                                        "imgs, latents_classes, latents_values, metadata")
            classes = npz["latents_classes"]
    except DataFileError:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib.error, ValueError, OSError
        raise _unreadable(path, e, "a dSprites .npz") from None
    _check_shape(path, "latents_classes", classes.shape, (classes.shape[0], 6))
    return _cached_npy_member(path, "imgs"), classes[:, 1:]  # drop colour (always 0)


def _cached_npy_member(path: Path, key: str) -> np.ndarray:
    """Memory-maps ``key`` of an npz, decompressing it once into a cached ``.npy``."""
    cache = cache_path(path, f".{key}.npy")
    if not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime:
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
        try:
            with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as src, open(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 24)
            Path(tmp).replace(cache)
        except Exception as e:
            Path(tmp).unlink(missing_ok=True)
            raise _unreadable(path, e, "a dSprites .npz") from None
        except BaseException:  # Ctrl-C: leave no half-written cache behind
            Path(tmp).unlink(missing_ok=True)
            raise
    try:
        return np.load(cache, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        cache.unlink(missing_ok=True)
        raise _unreadable(cache, e, "a cached .npy (deleted; it is rebuilt on the next open)")


def _h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as e:
        raise _unreadable(path, e, "an HDF5 file") from None


def _h5_get(f, path: Path, key: str):
    if key not in f:
        raise DataFileError(f"{path}: no '{key}' dataset; found {sorted(f.keys())}")
    return f[key]


def _dsprites_hdf5(path: Path):
    f = _h5(path)
    images = _h5_get(f, path, "imgs")
    classes = np.asarray(_h5_get(f, path, "latents/classes"))
    _check_shape(path, "latents/classes", classes.shape, (classes.shape[0], 6))
    return images, classes[:, 1:]


# -- Shapes3D ------------------------------------------------------------------------------
def _shapes3d_h5(path: Path):
    f = _h5(path)
    images = _h5_get(f, path, "images")
    labels = np.asarray(_h5_get(f, path, "labels"), np.float64)
    _check_shape(path, "labels", labels.shape, (labels.shape[0], 6))
    return images, shapes3d_classes(labels, str(path))


def shapes3d_classes(labels_Rx6: np.ndarray, where: str = "labels") -> np.ndarray:
    """Shapes3D float labels -> int class indices ``[R, 6]`` through the value grids."""
    out = np.empty(labels_Rx6.shape, np.int64)
    for j, grid in enumerate(SHAPES3D_VALUES):
        col = labels_Rx6[:, j]
        k = np.clip(np.searchsorted(grid, col), 1, len(grid) - 1)
        k = np.where(np.abs(col - grid[k - 1]) <= np.abs(col - grid[k]), k - 1, k)
        err = np.abs(col - grid[k])
        if (err > 1e-3 * (grid[-1] - grid[0])).any():
            i = int(np.argmax(err))
            raise DataFileError(f"{where}: label[{i}, {j}] = {float(col[i])} is not on the Shapes3D "
                                f"value grid {np.round(grid, 4).tolist()}")
        out[:, j] = k
    return out
