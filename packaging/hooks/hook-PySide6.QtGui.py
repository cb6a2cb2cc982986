"""PyInstaller hook for PySide6.QtGui, used instead of PyInstaller's own (see neuron-desk.spec).

The stock hook collects every plugin type of QtGui (Wayland, EGL, VNC, GTK theme, virtual
keyboard...), and their libraries follow them into the bundle. neuron-desk keeps only what it
uses; PNG support is built into QtGui, SVG (the app icon) needs the two svg plugins.
"""

from pathlib import PurePath

from PyInstaller.utils.hooks.qt import add_qt6_dependencies

QT_PLUGINS = {
    "platforms": {"libqxcb.so", "libqoffscreen.so"},
    "imageformats": {"libqsvg.so"},
    "iconengines": {"libqsvgicon.so"},
    "platforminputcontexts": {
        "libcomposeplatforminputcontextplugin.so",  # compose key / dead keys on X11
        "libibusplatforminputcontextplugin.so",  # input methods
    },
    "platformthemes": {"libqxdgdesktopportal.so"},  # the desktop's light/dark colour scheme
}


def _kept(source: str, dest_dir: str) -> bool:
    parts = PurePath(dest_dir).parts
    if "plugins" not in parts:
        return True
    plugin_type = parts[-1]
    return PurePath(source).name in QT_PLUGINS.get(plugin_type, set())


hiddenimports, binaries, datas = add_qt6_dependencies(__file__)
binaries = [(source, dest) for source, dest in binaries if _kept(source, dest)]
