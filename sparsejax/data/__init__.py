"""Factor datasets: dSprites and Shapes3D from a JAX renderer, the real files, or TFDS."""

from sparsejax.data.catalog import DATA_DIR_ENV, SPECS, get_dataset
from sparsejax.data.dataset import SOURCES, FactorDataset
from sparsejax.data.factors import FactorSpace, as_key

__all__ = ["DATA_DIR_ENV", "SOURCES", "SPECS", "FactorDataset", "FactorSpace", "as_key",
           "get_dataset"]
