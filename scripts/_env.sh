# Shared by scripts/test and scripts/demo: find the interpreters and build one virtualenv each.
# Python 3.11 gets mitmproxy 11.x, Python 3.12+ the newest mitmproxy 12 (pyproject's markers).

find_pythons() {
    local found=() candidate version
    for candidate in python3.11 "$(command -v pyenv >/dev/null && echo "$(pyenv root)"/versions/3.11.*/bin/python3.11)" \
                     python3.12 "$(command -v pyenv >/dev/null && echo "$(pyenv root)"/versions/3.12.*/bin/python3.12)" \
                     "${HOME}"/.pyenv/versions/3.1[12].*/bin/python3.1[12] python3; do
        for exe in $candidate; do
            command -v "$exe" >/dev/null 2>&1 || continue
            version=$("$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
            case "$version" in 3.11|3.12) ;; *) continue ;; esac
            [[ " ${found[*]-} " == *" $version="* ]] && continue
            found+=("$version=$(command -v "$exe")")
        done
    done
    printf '%s\n' "${found[@]}" | sort
}

# ensure_venv VERSION PYTHON EXTRAS -> prints the venv's python
ensure_venv() {
    local version=$1 python=$2 extras=$3 venv=".venv-$1"
    local stamp="$venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)$extras"
    if [[ ! -f "$stamp" ]]; then
        echo "== setting up $venv with $python (log: $venv.log)" >&2
        rm -rf "$venv"
        if ! { "$python" -m venv "$venv" && "$venv/bin/python" -m pip install --upgrade pip \
               && "$venv/bin/python" -m pip install -e ".$extras"; } > "$venv.log" 2>&1; then
            tail -n 30 "$venv.log" >&2
            echo "setting up $venv failed (full log: $venv.log)" >&2
            return 1
        fi
        touch "$stamp"
    fi
    echo "$venv/bin/python"
}
