"""A small synthetic profile for tests that need one without measuring anything (shipped, torch-free,
in hetsam.testing.profiles: the strategy contract plans on it)."""

from hetsam.testing.profiles import synthetic_profile_dict  # noqa: F401
