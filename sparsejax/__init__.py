"""sparsejax: sparse activations and interpretability in JAX.

Layers (dependencies point one way): ``data`` <- ``models``/``ops``/``metrics``/``sparsity``
<- ``train`` <- ``experiments``.
"""

__version__ = "0.1.0"
