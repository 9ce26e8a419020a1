#!/usr/bin/env bash
# Installs the test extras (and, where missing and possible, Xvfb + Mesa for headless Qt/OpenGL),
# then lints and runs the test suite on a virtual screen. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e ".[testing]"

# Qt under Xvfb needs these shared libraries; install them where we can (root or passwordless sudo).
deb_pkgs="xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
 libxcb-cursor0 libdbus-1-3 libfontconfig1"
need_libs() {
  # ldconfig's list is captured once: piping it into `grep -q` under pipefail fails at random
  # (grep exits at the first match, ldconfig dies of SIGPIPE, the pipeline reports 141)
  command -v xvfb-run >/dev/null 2>&1 || return 0
  local libs
  libs="$(ldconfig -p 2>/dev/null || true)"
  local lib
  for lib in libxkbcommon-x11 libxcb-icccm libEGL; do
    case "$libs" in *"$lib"*) ;; *) return 0 ;; esac
  done
  return 1
}
if need_libs && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo_cmd=""; elif sudo -n true 2>/dev/null; then sudo_cmd="sudo -n"; else sudo_cmd=none; fi
  if [ "$sudo_cmd" != none ]; then
    echo "installing Xvfb and Mesa for headless GUI tests"
    $sudo_cmd apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $deb_pkgs >/dev/null
  fi
fi

# The tests run on Qt 6 (napari deprecates PyQt5); qtpy would prefer an also-installed PyQt5.
export QT_API="${QT_API:-pyqt6}"

python -m ruff check napari_metaseg tests benchmarks
npe2 validate napari-metaseg

if command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1920x1200x24" python -m pytest "$@"
else
  echo "warning: xvfb-run not available; GUI tests fall back to QT_QPA_PLATFORM=offscreen (no OpenGL)"
  QT_QPA_PLATFORM=offscreen exec python -m pytest "$@"
fi
