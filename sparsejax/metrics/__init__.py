"""Metrics: disentanglement scores as disentanglement_lib computes them, dead units and
firing statistics, and unit-factor alignment.

Every disentanglement score comes in two forms: on precomputed codes and factors
(``mig(codes, factors)``, ``dci(codes_train, factors_train, codes_test, factors_test)``, ...)
and on a representation function ``fn(images [B, H, W, C]) -> codes [B, K]`` with a
``FactorDataset`` (``*_on_dataset`` / ``*_score``, with dlib's sample sizes and a
``jax.random.key`` or int seed).
"""

from sparsejax.metrics.alignment import UnitAlignment, alignment_from_mi, unit_alignment
from sparsejax.metrics.beta_vae import beta_vae, beta_vae_features, beta_vae_score
from sparsejax.metrics.binning import histogram_bins
from sparsejax.metrics.dci import completeness, dci, dci_on_dataset, disentanglement
from sparsejax.metrics.dead_units import (DEAD_THRESHOLDS, TAU_KEYS, FiringStats, Revival,
                                          dead_fraction, firing_counts, firing_stats, revival,
                                          tau_key, update_death_epochs)
from sparsejax.metrics.factor_vae import factor_vae_accuracy, factor_vae_score, factor_vae_votes
from sparsejax.metrics.floors import binary_entropy_sum, mean_image_nll
from sparsejax.metrics.information import entropy, histogram_mutual_info, mutual_info_matrix
from sparsejax.metrics.inputs import dense_labels
from sparsejax.metrics.mig import MIGDetails, mig, mig_details, mig_from_mi, mig_on_dataset
from sparsejax.metrics.modularity import (explicitness, modularity, modularity_explicitness,
                                          modularity_explicitness_on_dataset)
from sparsejax.metrics.sampling import encode, sample_codes, sample_train_test
from sparsejax.metrics.sap import sap, sap_on_dataset
from sparsejax.metrics.unsupervised import (gaussian_total_correlation,
                                            gaussian_wasserstein_correlation,
                                            mean_pairwise_mutual_info, unsupervised_on_dataset,
                                            unsupervised_scores)

__all__ = [
    # MIG and the information it is built from
    "MIGDetails", "mig", "mig_details", "mig_from_mi", "mig_on_dataset",
    "dense_labels", "entropy", "histogram_bins", "histogram_mutual_info", "mutual_info_matrix",
    # the other dlib scores
    "beta_vae", "beta_vae_features", "beta_vae_score",
    "completeness", "dci", "dci_on_dataset", "disentanglement",
    "factor_vae_accuracy", "factor_vae_score", "factor_vae_votes",
    "explicitness", "modularity", "modularity_explicitness", "modularity_explicitness_on_dataset",
    "sap", "sap_on_dataset",
    # floors
    "binary_entropy_sum", "mean_image_nll",
    "gaussian_total_correlation", "gaussian_wasserstein_correlation", "mean_pairwise_mutual_info",
    "unsupervised_on_dataset", "unsupervised_scores",
    # dead units and firing statistics
    "DEAD_THRESHOLDS", "TAU_KEYS", "FiringStats", "Revival", "dead_fraction", "firing_counts",
    "firing_stats", "revival", "tau_key", "update_death_epochs",
    # unit alignment
    "UnitAlignment", "alignment_from_mi", "unit_alignment",
    # sampling codes from a representation function
    "encode", "sample_codes", "sample_train_test",
]
