"""The sdist and wheel as a user gets them: built from the tracked files, then inspected."""

from __future__ import annotations

import email.message
import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import aioproducer

ROOT = Path(__file__).resolve().parents[2]

#: Libraries whose internals aioproducer uses (tests/unit/test_foreign_internals.py):
#: each is bounded below its next major version.
BOUNDED = ("aio-pika", "aiormq", "pamqp")


class Dist:
    def __init__(self, directory: Path) -> None:
        [self.wheel] = directory.glob("*.whl")
        [self.sdist] = directory.glob("*.tar.gz")
        with zipfile.ZipFile(self.wheel) as wheel:
            self.wheel_files = wheel.namelist()
            info = next(n for n in self.wheel_files if n.endswith(".dist-info/METADATA"))
            self.metadata = email.parser.BytesParser().parsebytes(wheel.read(info))
            top = next(n for n in self.wheel_files if n.endswith(".dist-info/top_level.txt"))
            self.top_level = wheel.read(top).decode().split()
        with tarfile.open(self.sdist) as sdist:
            # Paths inside the sdist, without its leading "aioproducer-X.Y.Z/".
            self.sdist_files = [n.partition("/")[2] for n in sdist.getnames()]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """The sdist and the wheel built from it, as a release would be: from the files git
    tracks (or would), not from whatever build leftovers lie in the work tree."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from the sdist: proves the sdist is complete.
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return Dist(out)


def values(metadata: email.message.Message, field: str) -> list[str]:
    return [str(value) for value in metadata.get_all(field, [])]


def test_wheel_holds_the_library_only(dist: Dist) -> None:
    assert dist.top_level == ["aioproducer"]
    outside = [
        name for name in dist.wheel_files if not name.startswith(("aioproducer/", "aioproducer-"))
    ]
    assert outside == []
    assert "aioproducer/py.typed" in dist.wheel_files
    assert "aioproducer/_stores/_mongo.py" in dist.wheel_files
    assert not any("demo_app" in name or name.endswith(".html") for name in dist.wheel_files)


def test_license_is_in_sdist_and_wheel(dist: Dist) -> None:
    assert "LICENSE" in dist.sdist_files
    licenses = [name for name in dist.wheel_files if name.endswith("/licenses/LICENSE")]
    assert len(licenses) == 1
    with zipfile.ZipFile(dist.wheel) as wheel:
        text = wheel.read(licenses[0]).decode()
    assert text == (ROOT / "LICENSE").read_text()
    assert "MIT License" in text
    assert dist.metadata["License-Expression"] == "MIT"
    assert values(dist.metadata, "License-File") == ["LICENSE"]


def test_version_comes_from_the_package(dist: Dist) -> None:
    assert dist.metadata["Version"] == aioproducer.__version__
    assert dist.wheel.name == f"aioproducer-{aioproducer.__version__}-py3-none-any.whl"


def test_metadata_is_complete(dist: Dist) -> None:
    meta = dist.metadata
    assert meta["Name"] == "aioproducer"
    assert meta["Summary"]
    assert meta["Author"] == "The aioproducer authors"
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "## Quick start" in meta.get_payload()
    classifiers = values(meta, "Classifier")
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    for minor in (11,):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Typing :: Typed" in classifiers
    # PEP 639: a license expression, so no license classifier beside it.
    assert not any(c.startswith("License ::") for c in classifiers)
    with zipfile.ZipFile(dist.wheel) as wheel:
        entry_points = wheel.read(
            next(n for n in dist.wheel_files if n.endswith("entry_points.txt"))
        ).decode()
    assert "aioproducer = aioproducer.__main__:main" in entry_points


def requirements(dist: Dist) -> dict[str, Requirement]:
    """The wheel's unconditional requirements, by name."""
    reqs = [Requirement(value) for value in values(dist.metadata, "Requires-Dist")]
    return {req.name: req for req in reqs if req.marker is None}


def test_imported_libraries_are_declared(dist: Dist) -> None:
    assert {"aio-pika", "aiormq", "aiosqlite", "yarl"} <= requirements(dist).keys()


@pytest.mark.parametrize("name", BOUNDED)
def test_libraries_whose_internals_are_used_are_bounded(dist: Dist, name: str) -> None:
    req = requirements(dist)[name]
    uppers = [spec for spec in req.specifier if spec.operator == "<"]
    assert len(uppers) == 1, f"{name} has no upper bound: {req}"
    [upper] = uppers
    installed = installed_version(name)
    assert req.specifier.contains(installed), f"{name} {installed} is outside {req}"
    # The bound is no later than the next major release after the one tested here
    # (the batched publishing path pins aio-pika and aiormq to the minor it was
    # verified on).
    next_major = Version(str(int(installed.split(".")[0]) + 1))
    assert Version(upper.version) <= next_major, f"{name}: {req} reaches past {next_major}"


def test_motor_extra_is_gone(dist: Dist) -> None:
    extras = values(dist.metadata, "Provides-Extra")
    assert "mongo" in extras
    assert "motor" not in extras
