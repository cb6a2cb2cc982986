#!/usr/bin/env bash
# Install the desktop entry, AppStream metainfo and icons under PREFIX/share (default ~/.local).
#
#   packaging/install_desktop.sh                 # for you: ~/.local/share/...
#   sudo packaging/install_desktop.sh /usr/local # for everyone
#
# The entry runs `neuron-desk` from PATH (pip's script, or a link to the bundle's executable).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-$HOME/.local}
app_id=io.github.neuron_desk.NeuronDesk
share=$prefix/share

install -Dm644 "packaging/$app_id.desktop" "$share/applications/$app_id.desktop"
install -Dm644 "packaging/$app_id.metainfo.xml" "$share/metainfo/$app_id.metainfo.xml"
install -Dm644 resources/icons/neuron-desk.svg \
    "$share/icons/hicolor/scalable/apps/$app_id.svg"
for png in packaging/icons/hicolor/*/apps/"$app_id".png; do
    size=$(basename "$(dirname "$(dirname "$png")")")
    install -Dm644 "$png" "$share/icons/hicolor/$size/apps/$app_id.png"
done
echo "installed $app_id under $share"
