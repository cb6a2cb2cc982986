#!/bin/sh
# The system libraries Qt's X11 (xcb) platform plugin needs, installed with the system's package
# manager (apt, dnf or pacman); nothing is done where they are all present already.
# Used by the README's first command. tests/qt/test_preflight.py checks the apt list covers
# every library the plugin links to.
set -e

APT="libegl1 libgl1 libfontconfig1 libfreetype6 libglib2.0-0 libdbus-1-3 libx11-6 libx11-xcb1
libxkbcommon0 libxkbcommon-x11-0 libxcb1 libxcb-cursor0 libxcb-glx0 libxcb-icccm4 libxcb-image0
libxcb-keysyms1 libxcb-randr0 libxcb-render0 libxcb-render-util0 libxcb-shape0 libxcb-shm0
libxcb-sync1 libxcb-util1 libxcb-xfixes0 libxcb-xkb1 fonts-dejavu-core"
DNF="mesa-libEGL mesa-libGL fontconfig freetype glib2 dbus-libs libX11 libX11-xcb libxkbcommon
libxkbcommon-x11 libxcb xcb-util-cursor xcb-util-image xcb-util-keysyms xcb-util-renderutil
xcb-util-wm xcb-util dejavu-sans-fonts"
PACMAN="libglvnd fontconfig freetype2 glib2 dbus libx11 libxkbcommon libxkbcommon-x11 libxcb
xcb-util-cursor xcb-util-image xcb-util-keysyms xcb-util-renderutil xcb-util-wm xcb-util
ttf-dejavu"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "install as root: $*" >&2; return 1; fi
}

if command -v apt-get >/dev/null && command -v dpkg >/dev/null; then
    # shellcheck disable=SC2086
    missing=$(for p in $APT; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    [ -z "$missing" ] && exit 0
    echo "installing the system libraries Qt needs: $(echo $missing)"
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
elif command -v dnf >/dev/null; then
    # shellcheck disable=SC2086
    rpm -q $DNF >/dev/null 2>&1 || as_root dnf install -y $DNF
elif command -v pacman >/dev/null; then
    # shellcheck disable=SC2086
    pacman -Q $PACMAN >/dev/null 2>&1 || as_root pacman -S --needed --noconfirm $PACMAN
else
    echo "no apt, dnf or pacman: install Qt's X11 libraries yourself (see README: Set up)" >&2
fi
