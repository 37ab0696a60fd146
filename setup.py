"""The package list is found, not written down: every folder under hetsam/ (a new strategy's
included), and the two folders shipped inside it from elsewhere (pyproject.toml's package-dir)."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["hetsam", "hetsam.*"], exclude=["*.__pycache__"]),
                "hetsam.simulator", "hetsam.reference_profiles"])
