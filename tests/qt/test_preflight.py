"""The checks before Qt starts, and the README's system packages against what Qt's X11 plugin
really links to on this system."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from neuron_desk.qt import preflight

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "install-system-packages.sh"


def test_debian_package_names() -> None:
    assert preflight.debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert preflight.debian_package("libxcb-keysyms.so.1") == "libxcb-keysyms1"
    assert preflight.debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert preflight.debian_package("libEGL.so.1") == "libegl1"
    assert preflight.debian_package("libglib-2.0.so.0") == "libglib2.0-0"
    assert preflight.debian_package("libdbus-1.so.3") == "libdbus-1-3"


def test_no_display_is_one_line() -> None:
    message = preflight.problem({"QT_QPA_PLATFORM": ""})
    assert message is not None and "no display" in message and "\n" not in message
    assert preflight.problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert preflight.problem({"WAYLAND_DISPLAY": "wayland-0"}) is None


def test_missing_libraries_are_named_with_their_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(preflight, "xcb_plugin", lambda: Path("/x/libqxcb.so"))
    monkeypatch.setattr(
        preflight, "missing_libraries", lambda _: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    )
    message = preflight.problem({"DISPLAY": ":0"})
    assert message is not None
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert "apt-get install libxcb-icccm4 libxcb-keysyms1" in message


def _apt_list() -> set[str]:
    text = SCRIPT.read_text()
    block = re.search(r'APT="([^"]*)"', text)
    assert block is not None
    return set(block.group(1).split())


def test_the_readme_command_installs_the_packages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "    sh packaging/install-system-packages.sh && pip install -e . && neuron-desk" in readme
    assert "libxcb-icccm4" in _apt_list() and "libxcb-cursor0" in _apt_list()


@pytest.mark.skipif(
    not (shutil.which("ldd") and shutil.which("dpkg") and shutil.which("apt-cache")),
    reason="needs ldd, dpkg and apt-cache (Debian/Ubuntu)",
)
def test_the_apt_list_covers_every_library_the_plugin_links_to() -> None:
    plugin = preflight.xcb_plugin()
    assert plugin is not None
    qt_lib = plugin.parents[2] / "lib"
    linked: set[str] = set()
    owners: set[str] = set()
    for binary in [plugin, *qt_lib.glob("libQt6XcbQpa.so*"), *qt_lib.glob("libQt6Gui.so*")]:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
                if "PySide6" not in parts[2]:
                    linked.add(Path(parts[2]).name)
            elif "not found" in line:  # not installed here: its package by Debian's naming
                owners.add(preflight.debian_package(parts[0]))
    for name in linked:
        out = subprocess.run(["dpkg", "-S", f"*/{name}"], capture_output=True, text=True).stdout
        if out:
            owners.add(out.split(":")[0])
    wanted = _apt_list()
    closure = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *sorted(wanted)],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    provided = wanted | {line.strip().split()[-1] for line in closure.splitlines() if line.strip()}
    provided = {p.split(":")[0].strip("<>") for p in provided}
    assert owners - provided == set()
