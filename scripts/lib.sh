# Shared helpers for the set-up scripts (sourced, not executed).

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        return 1
    fi
}

# True when a Debian package is installed (not merely known or half-removed).
deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# Install the given Debian packages that are missing; `apt-get update` runs at most
# once per shell (the package lists of a fresh image are empty).
_APT_UPDATED=0
apt_install_missing() {
    local missing=()
    local package
    for package in "$@"; do
        deb_installed "$package" || missing+=("$package")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo ">> installing Debian packages: ${missing[*]}" >&2
    if [ "$_APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        _APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}
