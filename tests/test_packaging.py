"""What `pip wheel .` installs: one import package, `asyncdqn`, with the envs, the scenarios and the shipped
CSVs inside it (issue 17). Builds a real wheel (~10 s) from a copy of the sources, so the checkout gains no
build/ or egg-info folder."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "asyncdqn", "envs", "data")


def _version(dist: str) -> tuple[int, ...]:
    return tuple(int(p) for p in importlib.metadata.version(dist).split(".")[:2] if p.isdigit())


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
    if importlib.util.find_spec("setuptools") is None or _version("setuptools") < (70, 1):
        # pyproject asks for setuptools >= 68; building a wheel without the `wheel` package needs 70.1
        pytest.skip("setuptools >= 70.1 is not installed here (needed to build the wheel without isolation)")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                        if (REPO / name).is_dir() else {}))
    out = src / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True, timeout=120)
    (wheel,) = out.glob("asyncdqn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_only_the_asyncdqn_package(wheel_names):
    tops = {name.split("/")[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"asyncdqn"}, tops


def test_the_wheel_holds_the_envs_scenarios_and_data(wheel_names):
    names = set(wheel_names)
    for module in ("envs/__init__.py", "envs/make.py", "envs/games.py", "envs/trading/__init__.py",
                   "envs/trading/env.py", "envs/trading/market_data.py", "envs/trading/backtest.py",
                   "envs/trading/cli.py", "envs/trading/config.py", "data/__init__.py"):
        assert f"asyncdqn/{module}" in names, module
    assert "asyncdqn/data/GOOGL.csv" in names and "asyncdqn/data/README.md" in names
    for shipped in (*(REPO / "data").glob("*.csv"), *(REPO / "data" / "licenses").iterdir()):  # with their licences
        assert f"asyncdqn/{shipped.relative_to(REPO)}" in names, shipped.name
    assert "asyncdqn/envs/trading/stats.py" in names
    scenarios = {p.name for p in (REPO / "asyncdqn" / "scenarios").glob("*.toml")}
    assert scenarios and {f"asyncdqn/scenarios/{s}" for s in scenarios} <= names
    grids = {p.name for p in (REPO / "asyncdqn" / "grids").glob("*.toml")}  # `asyncdqn sweep smoke`
    assert grids and {f"asyncdqn/grids/{g}" for g in grids} <= names
    assert not any("tests/" in n or n.startswith("envs/") for n in names)


def test_every_source_module_is_in_the_wheel(wheel_names):
    # a subpackage missing from [tool.setuptools] packages would install without its modules
    names = set(wheel_names)
    sources = [f"asyncdqn/{p.relative_to(REPO / 'asyncdqn').as_posix()}" for p in (REPO / "asyncdqn").rglob("*.py")]
    sources += [f"asyncdqn/envs/{p.relative_to(REPO / 'envs').as_posix()}" for p in (REPO / "envs").rglob("*.py")]
    assert len(sources) > 30 and not [s for s in sources if s not in names]
