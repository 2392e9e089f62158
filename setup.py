"""Package list for the mapped folders; all metadata is in pyproject.toml."""

from setuptools import find_packages, setup

packages = find_packages(include=["rasfw", "rasfw.*"])
packages += ["rasfw.conf"]
packages += ["rasfw.kernels"] + [f"rasfw.kernels.{name}" for name in find_packages("kernels")]

setup(packages=packages)
