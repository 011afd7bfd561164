# Sourced by the other scripts: sets PYTHON, the Python that tensordb is installed into and run with.
# Inside a virtual environment (or with PYTHON set), that one; otherwise the project's own .venv,
# made on first use, so a system Python that refuses pip installs (PEP 668) is never touched.
if [ -z "${PYTHON:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    elif [ -n "${CONDA_PREFIX:-}" ]; then
        PYTHON="$CONDA_PREFIX/bin/python"
    else
        if [ ! -x .venv/bin/python ]; then
            python3 -m venv .venv || {
                echo "tensordb: could not create .venv (on Debian/Ubuntu: apt install python3-venv)" >&2
                exit 1
            }
        fi
        PYTHON="$PWD/.venv/bin/python"
    fi
    echo "tensordb: using the Python environment at $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
fi
export PYTHON
