# Shared by scripts/start and scripts/test: find a Python, make the virtual environment.
# PYTHON_VERSION (default 3.11) picks the interpreter; VENV (default .venv, or
# .venv-<version> for another version) where the environment goes.

PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
if [ "$PYTHON_VERSION" = "3.11" ]; then VENV="${VENV:-.venv}"; else VENV="${VENV:-.venv-$PYTHON_VERSION}"; fi

find_python() {
  local candidate
  for candidate in /root/.pyenv/versions/"$PYTHON_VERSION".*/bin/python \
                   "$(command -v "python$PYTHON_VERSION" 2>/dev/null)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import venv' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "No Python $PYTHON_VERSION found (looked in /root/.pyenv/versions and PATH)." >&2
  return 1
}

# setup_venv REQUIREMENTS_FILE: create $VENV if needed and install the pinned packages.
setup_venv() {
  local requirements="$1" python stamp
  if [ ! -x "$VENV/bin/python" ]; then
    python="$(find_python)"
    echo "Creating $VENV with $python"
    "$python" -m venv "$VENV"
  fi
  stamp="$VENV/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "Installing $requirements into $VENV (radical.saga builds from source: a minute)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$requirements"
    touch "$stamp"
  fi
  PY="$VENV/bin/python"
  export PATH="$PWD/$VENV/bin:$PATH"
}
