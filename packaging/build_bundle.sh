#!/usr/bin/env bash
# Build the one-folder Linux bundle: dist/neuron-desk/neuron-desk (run from anywhere).
#
#   packaging/build_bundle.sh            # build (installs PyInstaller if missing)
#   packaging/build_bundle.sh --smoke    # and then start it on the bundled sample under
#                                        # Xvfb (or offscreen) and save a screenshot
#
# Uses the Python on PATH (activate the environment neuron-desk is installed in first).
set -euo pipefail
cd "$(dirname "$0")/.."

python -c 'import neuron_desk' 2>/dev/null || {
    echo "neuron-desk is not importable: run 'pip install -e .' first" >&2
    exit 1
}
python -c 'import PyInstaller' 2>/dev/null || python -m pip install --quiet 'pyinstaller>=6.10'
ls resources/datasets/*.sqlite3 >/dev/null || {
    echo "the bundled sample dataset is missing (resources/datasets)" >&2
    exit 1
}

start=$(date +%s)
python -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/neuron-desk.spec
packaging/install_desktop.sh dist/neuron-desk >/dev/null  # share/: desktop entry, metainfo, icons
echo "built dist/neuron-desk in $(( $(date +%s) - start )) s, $(du -sh dist/neuron-desk | cut -f1)"

if [ "${1:-}" = "--smoke" ]; then
    home=$(mktemp -d)
    shot=dist/smoke-screenshot.png
    if command -v xvfb-run >/dev/null; then
        run=(xvfb-run -a -s "-screen 0 1600x1000x24")
    else
        run=(env QT_QPA_PLATFORM=offscreen)
    fi
    NEURON_DESK_HOME="$home" timeout 120 "${run[@]}" dist/neuron-desk/neuron-desk --screenshot "$shot"
    rm -rf "$home"
    echo "smoke test passed: $shot"
fi
