# shellcheck shell=bash
# Shared by scripts/test.sh, scripts/pg_cluster.sh and deploy/validate.sh
# (sourced, not run). Messages name the calling script.

# die MESSAGE: prints "SCRIPT_NAME: MESSAGE" to stderr and exits 1.
die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# as_root COMMAND...: runs a command as root (through sudo when not root).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# pip_install PACKAGE COMMAND: installs PACKAGE from PyPI unless COMMAND is
# on PATH already, and puts pip's scripts dir on PATH.
pip_install() {
  local package=$1 cmd=$2
  command -v "$cmd" >/dev/null && return 0
  command -v python3 >/dev/null || die "python3 is needed to install $package"
  echo "installing $cmd (PyPI $package)"
  # pip's stderr (warnings about root, PATH, PEP 668) is shown only if it fails.
  # A Python that refuses to install into itself (PEP 668, "externally
  # managed", e.g. Debian's) gets a user install instead.
  local pip_log
  pip_log=$(mktemp)
  if ! python3 -m pip install --quiet "$package" 2>"$pip_log"; then
    echo "(pip refused to install into $(python3 -c 'import sys; print(sys.prefix)'); installing with --user)"
    python3 -m pip install --quiet --user --break-system-packages "$package" 2>>"$pip_log" || {
      cat "$pip_log" >&2
      rm -f "$pip_log"
      die "pip could not install $package"
    }
  fi
  rm -f "$pip_log"
  # Where pip puts scripts: the interpreter's scripts dir (venv, pyenv
  # version), the user base (--user), /usr/local/bin (Debian's pip).
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$(python3 -m site --user-base)/bin:/usr/local/bin:$PATH"
  if command -v pyenv >/dev/null; then
    pyenv rehash || true
    PATH="$(pyenv root)/shims:$PATH"
  fi
  export PATH
  hash -r
  command -v "$cmd" >/dev/null || die "$package is installed but $cmd is not on PATH ($PATH)"
}
