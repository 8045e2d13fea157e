"""dSprites: 2D sprites (square, ellipse, heart) on a 64x64 binary canvas.

The factor grid is the real dataset's with colour dropped (as disentanglement_lib's
``dsprites_full``): shape 3, scale 6 (0.5 .. 1), orientation 40 (0 .. 2 pi, both ends
included), x position 32 and y position 32 (0 .. 1), y fastest.
"""

from sparsejax.data.factors import FactorSpace

SPACE = FactorSpace(
    names=("shape", "scale", "orientation", "x_position", "y_position"),
    sizes=(3, 6, 40, 32, 32),
)
OBSERVATION_SHAPE = (64, 64, 1)
