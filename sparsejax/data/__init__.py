"""Factor datasets: dSprites and Shapes3D from a JAX renderer, the real files, or TFDS."""

from sparsejax.data.catalog import DATA_DIR_ENV, DATASETS, SPECS, get_dataset
from sparsejax.data.dataset import SOURCE_CHOICES, SOURCES, FactorDataset
from sparsejax.data.factors import FactorSpace, as_key

__all__ = ["DATA_DIR_ENV", "DATASETS", "SOURCE_CHOICES", "SOURCES", "SPECS", "FactorDataset",
           "FactorSpace", "as_key",
           "get_dataset"]
