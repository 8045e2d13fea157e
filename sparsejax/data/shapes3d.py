"""Shapes3D: one object in a room, seen from a camera at a varying azimuth, 64x64 RGB.

Factors in the real dataset's storage order (orientation fastest): floor hue 10,
wall hue 10, object hue 10 (0.0, 0.1 .. 0.9), scale 8 (0.75 .. 1.25), shape 4 (cube,
cylinder, sphere, capsule), orientation 15 (camera azimuth -30 .. 30 degrees).
"""

from sparsejax.data.factors import FactorSpace

SPACE = FactorSpace(
    names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    sizes=(10, 10, 10, 8, 4, 15),
)
OBSERVATION_SHAPE = (64, 64, 3)
