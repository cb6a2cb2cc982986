"""Packaging: the desktop entry, the AppStream metainfo, the icons, and the wheel's resources.

The validators run where their Debian packages are installed (desktop-file-utils, appstream);
elsewhere those two tests are skipped. The bundle itself is built by packaging/build_bundle.sh,
not here (it takes a minute and PyInstaller is not a dependency).
"""

from __future__ import annotations

import configparser
import shutil
import struct
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

import neuron_desk
from neuron_desk.qt.app import APP_ID

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
DESKTOP_FILE = PACKAGING / f"{APP_ID}.desktop"
METAINFO = PACKAGING / f"{APP_ID}.metainfo.xml"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="no desktop-file-utils")
def test_desktop_file_is_valid() -> None:
    result = _run("desktop-file-validate", str(DESKTOP_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


@pytest.mark.skipif(shutil.which("appstreamcli") is None, reason="no appstream")
def test_metainfo_is_valid() -> None:
    result = _run("appstreamcli", "validate", "--no-net", str(METAINFO))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("appstreamcli") is None, reason="no appstream")
def test_installed_tree_is_valid(tmp_path: Path) -> None:
    install = _run("bash", str(PACKAGING / "install_desktop.sh"), str(tmp_path))
    assert install.returncode == 0, install.stdout + install.stderr
    result = _run("appstreamcli", "validate-tree", "--no-net", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_desktop_file_launches_the_installed_command() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    entry.read(DESKTOP_FILE, encoding="utf-8")
    section = entry["Desktop Entry"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert section["Exec"].split()[0] in scripts
    assert section["Icon"] == APP_ID
    assert section["Type"] == "Application"


def test_metainfo_names_the_app_and_its_release() -> None:
    component = ElementTree.parse(METAINFO).getroot()
    assert component.findtext("id") == APP_ID
    assert component.findtext("launchable") == DESKTOP_FILE.name
    assert component.findtext("project_license") == "MIT"
    assert component.find("content_rating") is not None
    image = component.findtext("screenshots/screenshot/image") or ""
    assert image.startswith("https://")
    assert (ROOT / image.split("/main/", 1)[1]).is_file()  # the file the URL points at
    versions = [r.get("version") for r in component.iterfind("releases/release")]
    assert versions and versions[0] == neuron_desk.__version__


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("size", ICON_SIZES)
def test_hicolor_icons_have_their_size(size: int) -> None:
    icon = PACKAGING / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    assert _png_size(icon) == (size, size)


def test_icon_source_is_svg() -> None:
    source = ROOT / "neuron_desk" / "resources" / "icons" / "neuron-desk.svg"
    root = ElementTree.parse(source).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize("name", ["build_bundle.sh", "install_desktop.sh"])
def test_scripts_parse(name: str) -> None:
    script = PACKAGING / name
    assert _run("bash", "-n", str(script)).returncode == 0
    assert script.stat().st_mode & 0o111, f"{name} should be executable"


@pytest.mark.timeout(600)
def test_wheel_contains_the_runtime_resources(tmp_path: Path) -> None:
    result = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("neuron_desk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(
        n.startswith("neuron_desk/resources/datasets/") and n.endswith(".sqlite3") for n in names
    ), "the bundled sample dataset"
    assert {
        "neuron_desk/method/data/few_shot_examples.json",
        "neuron_desk/method/data/token_space_few_shot_examples.json",
        "neuron_desk/data/interesting_gpt2_xl.json",
        "neuron_desk/resources/icons/neuron-desk.svg",
    } <= names
