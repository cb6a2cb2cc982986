"""Checks before Qt starts, so a missing display or library is one clear line, not Qt's abort.

Qt aborts the process when its platform plugin cannot load, and its message names only
libxcb-cursor0. On Linux with the X11 (xcb) platform we check first: is there a display, and
does the plugin find every library it links to (`ldd`)? What is missing is named, with the
command that installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

INSTALL_HINT = (
    "sudo apt-get install {packages}  (Fedora: dnf, Arch: pacman; the README's first command "
    "installs them all)"
)
_DEBIAN_NAMES = {"libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0"}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a library, by Debian's naming rule
    (libxcb-icccm.so.4 → libxcb-icccm4, libxkbcommon-x11.so.0 → libxkbcommon-x11-0)."""
    if soname in _DEBIAN_NAMES:
        return _DEBIAN_NAMES[soname]
    name, _, version = soname.partition(".so.")
    name = name.lower()
    version = version.split(".")[0]
    return f"{name}-{version}" if name[-1:].isdigit() else f"{name}{version}"


def xcb_plugin() -> Path | None:
    """Qt's X11 platform plugin inside the installed PySide6 (None if not found)."""
    try:
        import PySide6
    except ImportError:
        return None
    root = Path(PySide6.__file__).parent
    for candidate in (root / "Qt" / "plugins", root / "plugins"):
        plugin = candidate / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def missing_libraries(plugin: Path) -> list[str]:
    """The libraries `plugin` links to that the system's loader cannot find."""
    if shutil.which("ldd") is None:
        return []
    try:
        out = subprocess.run(
            ["ldd", str(plugin)], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(set(_NOT_FOUND.findall(out)))


def problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why the window cannot open here, in one line; None if nothing is known to be wrong."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # offscreen, wayland, vnc...: Qt reports its own problems
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return (
            "no display to open the window on (DISPLAY is not set): start it from a desktop "
            "session, or check an install headless with "
            "`QT_QPA_PLATFORM=offscreen neuron-desk --screenshot out.png`"
        )
    if env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY"):
        return None  # Qt picks its Wayland plugin
    plugin = xcb_plugin()
    missing = missing_libraries(plugin) if plugin is not None else []
    if missing:
        packages = " ".join(sorted({debian_package(m) for m in missing}))
        return (
            f"Qt's X11 plugin cannot load: the system lacks {', '.join(missing)}. Install them: "
            + INSTALL_HINT.format(packages=packages)
        )
    return None
