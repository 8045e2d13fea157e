"""Metrics: disentanglement (dlib-exact), dead units and firing statistics, unit alignment."""

from sparsejax.metrics.alignment import UnitAlignment, alignment_from_mi, unit_alignment
from sparsejax.metrics.dead_units import (DEAD_THRESHOLDS, FiringStats, Revival, dead_fraction,
                                          firing_counts, firing_stats, revival,
                                          update_death_epochs)
from sparsejax.metrics.information import (dense_labels, entropy, histogram_bins,
                                           histogram_mutual_info, mutual_info_matrix)
from sparsejax.metrics.mig import MIGDetails, mig, mig_details, mig_from_mi, mig_on_dataset
from sparsejax.metrics.sampling import encode, sample_codes, sample_train_test

__all__ = [
    "DEAD_THRESHOLDS", "FiringStats", "Revival", "UnitAlignment", "alignment_from_mi",
    "dead_fraction", "firing_counts", "firing_stats", "revival", "unit_alignment",
    "update_death_epochs",
    "MIGDetails", "dense_labels", "encode", "entropy", "histogram_bins", "histogram_mutual_info",
    "mig", "mig_details", "mig_from_mi", "mig_on_dataset", "mutual_info_matrix", "sample_codes",
    "sample_train_test",
]
