"""Fixtures for the metrics tests."""

import pytest

from dlib_restated import identity_dataset


@pytest.fixture
def identity_data():
    """dlib's identity-observation dataset (10 factors of 10 values)."""
    return identity_dataset()
