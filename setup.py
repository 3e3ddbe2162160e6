"""Package discovery only; everything else is in pyproject.toml.

Every package under ``advhooks/`` is found automatically, and the top-level folder ``integrations/`` is
installed as the subpackage ``advhooks.integrations`` (the adapters stay visibly apart from the core in
the checkout). ``tests/test_packaging.py`` builds the wheel and checks that it holds every package.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["advhooks", "advhooks.*"]) + ["advhooks.integrations"],
    package_dir={"advhooks.integrations": "integrations"},
)
