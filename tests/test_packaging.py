"""Packaging: the desktop entry, the AppStream metainfo, the icons, and the runtime resources.

The resources live in the top-level resources/ folder, which pyproject.toml maps to the package
neuron_desk.resources: checked in a wheel built here and in the current (editable) install.

The validators run where their Debian packages are installed (desktop-file-utils, appstream);
elsewhere those two tests are skipped. The bundle itself is built by packaging/build_bundle.sh,
not here (it takes a minute and PyInstaller is not a dependency).
"""

from __future__ import annotations

import configparser
import json
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
from neuron_desk import resources
from neuron_desk.qt.app import APP_ID

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
RESOURCES = ROOT / "resources"
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
    source = RESOURCES / "icons" / "neuron-desk.svg"
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
    assert {
        "neuron_desk/resources/__init__.py",
        "neuron_desk/resources/datasets/smollm2-135m-instruct.sqlite3",
        "neuron_desk/resources/datasets/smollm2-135m-instruct-sae.sqlite3",
        "neuron_desk/resources/icons/neuron-desk.svg",
        "neuron_desk/resources/few_shot/few_shot_examples.json",
        "neuron_desk/resources/few_shot/token_space_few_shot_examples.json",
        "neuron_desk/resources/interesting/gpt2-xl.json",
    } <= names
    assert not [n for n in names if "screenshots" in n or n.endswith(".png")], "README images"
    # The bundled SAE weights, which the latent sample's Dictionary.weights point to.
    dictionaries = {
        f"neuron_desk/resources/{p.relative_to(RESOURCES).as_posix()}"
        for p in (RESOURCES / "dictionaries").rglob("*")
        if p.suffix in (".json", ".safetensors")
    }
    assert any(n.endswith("/sae_weights.safetensors") for n in dictionaries)
    assert dictionaries <= names, sorted(dictionaries - names)
    assert not [n for n in names if n.startswith(("resources/", "tests/", "packaging/"))]
    # Every Python file of the package and of resources/ is in the wheel.
    package = ROOT / "neuron_desk"
    sources = {f"neuron_desk/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")}
    sources |= {f"neuron_desk/resources/{p.name}" for p in RESOURCES.glob("*.py")}
    assert sources <= names, sorted(sources - names)


def test_every_package_folder_is_listed_in_pyproject() -> None:
    # The package-dir mapping of resources/ rules out packages.find: a new package folder has to
    # be added to [tool.setuptools] packages, or the wheel leaves it out.
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {
        ".".join(p.relative_to(ROOT).parts)
        for p in (ROOT / "neuron_desk").rglob("*")
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))
    }
    assert folders <= listed, f"add to [tool.setuptools] packages: {sorted(folders - listed)}"
    assert "neuron_desk.resources" in listed
    assert setuptools["package-dir"] == {"neuron_desk.resources": "resources"}


def test_editable_install_finds_every_resource() -> None:
    # The current environment: `pip install -e .` maps neuron_desk.resources to resources/.
    assert Path(str(resources.root())).resolve() == RESOURCES.resolve()
    datasets = resources.bundled_datasets()
    assert [p.name for p in datasets] == [
        "smollm2-135m-instruct-sae.sqlite3",
        "smollm2-135m-instruct.sqlite3",
    ]
    assert datasets[0].is_file() and datasets[0].read_bytes()[:16] == b"SQLite format 3\x00"
    icon = resources.icon_path()
    assert icon is not None and icon.is_file()
    assert ElementTree.parse(icon).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    few_shot = json.loads(resources.read_text("few_shot", "few_shot_examples.json"))
    assert few_shot["ORIGINAL_EXAMPLES"] and few_shot["TEST_SINGLE_TOKEN_EXAMPLE"]
    token_space = json.loads(resources.read_text("few_shot", "token_space_few_shot_examples.json"))
    assert token_space["ORIGINAL_EXAMPLES"]
    interesting = json.loads(resources.read_text("interesting", "gpt2-xl.json"))["neurons"]
    assert interesting and all({"layer", "neuron", "label"} <= set(n) for n in interesting)


def test_editable_install_finds_resources_from_another_directory(tmp_path: Path) -> None:
    # Not through the checkout being the current directory: only the install's mapping.
    probe = (
        "from neuron_desk import resources; import json; "
        "print(json.dumps([str(p) for p in resources.bundled_datasets()] + "
        "[str(resources.icon_path()), len(resources.read_text('interesting', 'gpt2-xl.json'))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    *datasets, icon, interesting = json.loads(result.stdout)
    assert [Path(p).resolve() for p in datasets] == sorted(
        p.resolve() for p in (RESOURCES / "datasets").glob("*.sqlite3")
    )
    assert Path(icon).resolve() == (RESOURCES / "icons" / "neuron-desk.svg").resolve()
    assert interesting > 0


def test_screenshots_are_not_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    assert setuptools.get("include-package-data") is False
    assert not any("screenshots" in p for p in setuptools["package-data"]["neuron_desk.resources"])
    assert (RESOURCES / "screenshots" / "main-window-1024x700.png").is_file()  # the README's image
