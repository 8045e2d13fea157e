"""The file and TFDS sources, on fixture files written here in the real formats, and bad input."""

import dataclasses
import zipfile

import h5py
import jax
import numpy as np
import pytest

from sparsejax.data import FactorSpace, get_dataset
from sparsejax.data.catalog import SPECS
from sparsejax.data.files import SHAPES3D_VALUES, open_file, shapes3d_classes
from sparsejax.data.records import DataFileError

DSPRITES_NPZ = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_HDF5 = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"


def small_spec(name, sizes):
    """The real spec with a shrunken factor grid, so fixture files stay tiny."""
    spec = SPECS[name]
    return dataclasses.replace(spec, space=FactorSpace(spec.space.names, sizes))


def grid_classes(space):
    return space.index_to_factors(np.arange(space.num_points))


def random_images(rng, n, shape, binary):
    if binary:
        return rng.integers(0, 2, (n, *shape), dtype=np.uint8)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


def write_dsprites_npz(path, classes_RxF, imgs):
    latents = np.concatenate([np.zeros((len(classes_RxF), 1), np.int64), classes_RxF], 1)
    metadata = np.array({"date": "fixture"}, dtype=object)  # pickled, like the real file
    np.savez_compressed(path, imgs=imgs, latents_classes=latents,
                        latents_values=latents.astype(np.float64), metadata=metadata)


# -- dSprites .npz ------------------------------------------------------------------------
def test_npz_reads_by_factor_and_caches_decompressed_images(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 3, 2, 2))
    classes = grid_classes(spec.space)
    perm = rng.permutation(len(classes))  # any storage order must map back to the grid
    imgs = random_images(rng, len(classes), (64, 64), binary=True)
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes[perm], imgs)

    ds = open_file(spec, path)
    assert ds.source == "file" and not ds.on_device
    cache = tmp_path / (DSPRITES_NPZ + ".imgs.npy")
    assert cache.exists()
    want = rng.integers(0, spec.space.sizes, (7, 5))
    row_of = {tuple(c): i for i, c in enumerate(classes[perm])}
    expected = np.stack([imgs[row_of[tuple(f)]] for f in want])[..., None].astype(np.float32)
    got = ds.render(want)
    assert got.dtype == np.float32 and got.shape == (7, 64, 64, 1)
    np.testing.assert_array_equal(got, expected)

    mtime = cache.stat().st_mtime_ns
    np.testing.assert_array_equal(open_file(spec, path).render(want), expected)
    assert cache.stat().st_mtime_ns == mtime, "the cached .npy should be reused, not rebuilt"


def test_npz_never_unpickles(tmp_path, rng, monkeypatch):
    import pickle

    spec = small_spec("dsprites", (3, 1, 2, 1, 2))
    classes = grid_classes(spec.space)
    write_dsprites_npz(tmp_path / DSPRITES_NPZ, classes,
                       random_images(rng, len(classes), (64, 64), True))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled file content"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled file content"))
    open_file(spec, tmp_path / DSPRITES_NPZ).render(classes[:3])


def test_truncated_npz_names_the_file(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    classes = grid_classes(spec.space)
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes, random_images(rng, len(classes), (64, 64), True))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=r"truncated or corrupt") as e:
        open_file(spec, path)
    assert DSPRITES_NPZ in str(e.value)
    assert not list(tmp_path.glob("*.tmp")), "a failed decompression must leave no temp file"


def test_npz_with_corrupt_imgs_member_leaves_no_cache(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    classes = grid_classes(spec.space)
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes, random_images(rng, len(classes), (64, 64), True))
    with zipfile.ZipFile(path) as zf:  # flip bytes inside the compressed imgs member
        info = zf.getinfo("imgs.npy")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 40
    raw[start:start + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match=DSPRITES_NPZ):
        open_file(spec, path)
    assert not (tmp_path / (DSPRITES_NPZ + ".imgs.npy")).exists()


def test_wrong_shaped_npz(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    classes = grid_classes(spec.space)
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes, random_images(rng, len(classes), (32, 32), True))
    with pytest.raises(DataFileError, match=r"'images' has shape \(48, 32, 32\), expected "
                                            r"\(48, 64, 64\)"):
        open_file(spec, path)


def test_partial_copy_is_refused(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    classes = grid_classes(spec.space)[:-5]
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes, random_images(rng, len(classes), (64, 64), True))
    with pytest.raises(DataFileError, match=r"covering 43 of the 48 factor tuples"):
        open_file(spec, path)


def test_labels_out_of_range_in_file(tmp_path, rng):
    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    classes = grid_classes(spec.space)
    classes[4, 2] = 7
    path = tmp_path / DSPRITES_NPZ
    write_dsprites_npz(path, classes, random_images(rng, len(classes), (64, 64), True))
    with pytest.raises(DataFileError, match=r"= 7 is out of range for factor 'orientation'"):
        open_file(spec, path)


# -- full-size HDF5 files (chunked: unwritten chunks take no space) -----------------------
def write_sparse_h5(path, images_key, image_shape, labels_key, labels, written):
    with h5py.File(path, "w") as f:
        d = f.create_dataset(images_key, (len(labels), *image_shape), np.uint8,
                             chunks=(64, *image_shape), compression="gzip")
        for i, img in written.items():
            d[i] = img
        f.create_dataset(labels_key, data=labels, compression="gzip", chunks=(65536, 6))


def test_dsprites_hdf5_full_grid_through_get_dataset(tmp_path, rng, capsys):
    space = SPECS["dsprites"].space
    classes = grid_classes(space)
    latents = np.concatenate([np.zeros((len(classes), 1), np.int64), classes], 1)
    idx = rng.choice(space.num_points, 5, replace=False)
    written = {int(i): random_images(rng, 1, (64, 64), True)[0] for i in idx}
    write_sparse_h5(tmp_path / DSPRITES_HDF5, "imgs", (64, 64), "latents/classes", latents,
                    written)

    ds = get_dataset("dsprites", source="auto", data_dir=tmp_path)
    assert ds.source == "file" and "using the file source" in capsys.readouterr().out
    assert ds.factor_names == get_dataset("dsprites", "procedural").factor_names
    got = ds.render(classes[np.sort(idx)[::-1]])  # decreasing order: h5py needs a sort inside
    want = np.stack([written[int(i)] for i in np.sort(idx)[::-1]])[..., None]
    np.testing.assert_array_equal(got, want.astype(np.float32))
    np.testing.assert_array_equal(ds.images_at(np.sort(idx)), want[::-1])


def test_shapes3d_h5_full_grid(tmp_path, rng, monkeypatch):
    space = SPECS["shapes3d"].space
    classes = grid_classes(space)
    labels = np.stack([SHAPES3D_VALUES[j][classes[:, j]] for j in range(6)], 1)
    idx = rng.choice(space.num_points, 4, replace=False)
    written = {int(i): random_images(rng, 1, (64, 64, 3), False)[0] for i in idx}
    write_sparse_h5(tmp_path / "3dshapes.h5", "images", (64, 64, 3), "labels", labels, written)

    monkeypatch.setenv("SPARSEJAX_DATA_DIR", str(tmp_path))
    ds = get_dataset("shapes3d", source="file")
    got = ds.render(classes[idx])
    want = np.stack([written[int(i)] for i in idx]).astype(np.float32) / 255.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    # A sample draws factors and their images together.
    factors, images = ds.sample(jax.random.key(0), 3)
    assert images.shape == (3, 64, 64, 3) and factors.shape == (3, 6)


def test_shapes3d_labels_to_classes_against_tfds_rule(rng):
    # TFDS discretises each label column by the rank of its distinct values.
    classes = np.stack([rng.integers(0, s, 500) for s in SPECS["shapes3d"].space.sizes], 1)
    classes[: max(SPECS["shapes3d"].space.sizes)] = np.minimum(
        np.arange(max(SPECS["shapes3d"].space.sizes))[:, None],
        np.array(SPECS["shapes3d"].space.sizes) - 1)  # every value present
    labels = np.stack([SHAPES3D_VALUES[j][classes[:, j]] for j in range(6)], 1)
    labels += rng.normal(0, 1e-7, labels.shape)  # float noise as in a stored file
    for j in range(6):
        ranks = np.unique(np.round(labels[:, j], 5), return_inverse=True)[1]
        np.testing.assert_array_equal(shapes3d_classes(labels)[:, j], ranks)
    labels[3, 5] = 31.0
    with pytest.raises(DataFileError, match=r"label\[3, 5\] = 31.0 is not on the Shapes3D"):
        shapes3d_classes(labels)


def test_truncated_h5(tmp_path):
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros((100, 6)))
        f.create_dataset("images", data=np.zeros((100, 64, 64, 3), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:2000])
    with pytest.raises(DataFileError, match=r"3dshapes.h5: could not be read as an HDF5 file"):
        get_dataset("shapes3d", source="file", data_dir=tmp_path)


def test_h5_missing_key(tmp_path):
    path = tmp_path / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("labels", data=np.zeros((10, 6)))
    with pytest.raises(DataFileError, match=r"no 'images' dataset; found \['labels'\]"):
        get_dataset("shapes3d", source="file", data_dir=path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no dsprites file found in .*expected one of"):
        get_dataset("dsprites", source="file", data_dir=tmp_path)


# -- TFDS ---------------------------------------------------------------------------------
class GridRecords:
    """A random-access data source like ``tfds.data_source``'s: shuffled records of a grid."""

    def __init__(self, space, names, rng, channels):
        self.classes = grid_classes(space)[rng.permutation(space.num_points)]
        self.names, self.channels = names, channels
        self.images = rng.integers(0, 256 if channels == 3 else 2,
                                   (space.num_points, 64, 64, channels), dtype=np.uint8)

    def __len__(self):
        return len(self.classes)

    def __getitem__(self, i):
        return {"image": self.images[i],
                **{f"label_{n}": int(c) for n, c in zip(self.names, self.classes[i])}}

    def __getitems__(self, rows):
        return [self[i] for i in rows]


@pytest.mark.parametrize("name,sizes", [("dsprites", (3, 2, 2, 2, 2)),
                                        ("shapes3d", (3, 2, 2, 2, 4, 2))])
def test_tfds_source_through_mock_data(tmp_path, rng, name, sizes):
    import tensorflow_datasets as tfds

    from sparsejax.data.tfds_source import open_tfds

    spec = small_spec(name, sizes)
    records = GridRecords(spec.space, spec.space.names, rng, spec.observation_shape[-1])
    seen = {}

    def as_data_source(builder, split=None, decoders=None, **kw):
        seen.setdefault("names", []).append(builder.name)
        return records

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        ds = open_tfds(spec, tmp_path)
        want = np.stack([rng.integers(0, s, 6) for s in sizes], 1)
        got = ds.render(want)
    assert seen["names"][0] == SPECS[name].tfds_name
    rows = [int(np.flatnonzero((records.classes == f).all(1))[0]) for f in want]
    scale = 255.0 if name == "shapes3d" else 1.0
    np.testing.assert_allclose(got, records.images[rows].astype(np.float32) / scale, atol=1e-7)
    assert ds.source == "tfds"


def test_tfds_partial_copy_is_refused(tmp_path, rng):
    import tensorflow_datasets as tfds

    from sparsejax.data.tfds_source import open_tfds

    spec = small_spec("dsprites", (3, 2, 2, 2, 2))
    records = GridRecords(spec.space, spec.space.names, rng, 1)
    records.classes = records.classes[:-3]
    with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: records):
        with pytest.raises(DataFileError, match=r"45 records covering 45 of the 48 factor tuples"):
            open_tfds(spec, tmp_path)


def test_tfds_without_data_dir():
    with pytest.raises(DataFileError, match="the tfds source needs data_dir"):
        get_dataset("shapes3d", source="tfds")


# -- names, sources, factors --------------------------------------------------------------
def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist': expected one of "
                                         r"\['dsprites', 'shapes3d'\]"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown source 'disk'"):
        get_dataset("dsprites", source="disk")


def test_auto_falls_back_to_procedural_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPARSEJAX_DATA_DIR", raising=False)
    ds = get_dataset("shapes3d", data_dir=tmp_path)
    assert ds.source == "procedural" and ds.on_device
    assert "shapes3d: using the procedural source" in capsys.readouterr().out


def test_a_data_dir_that_does_not_exist_is_refused_not_replaced_by_procedural(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data_dir .*typo does not exist"):
        get_dataset("dsprites", source="auto", data_dir=tmp_path / "typo")
    assert get_dataset("dsprites", source="procedural", data_dir=tmp_path / "typo").source \
        == "procedural"
