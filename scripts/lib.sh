# Shared by scripts/serve and scripts/test: find or install what a fresh
# machine lacks. Installs only on Debian or Ubuntu as root; elsewhere it stops
# with one line saying what to install.

pg_bindir() {
    for dir in $(command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)") \
               $(pg_config --bindir 2>/dev/null) \
               $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

can_apt() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

apt_updated=no
# apt_install WHAT PACKAGE...: installs the Debian packages, or stops saying
# that WHAT is needed and how to get it.
apt_install() {
    local what=$1
    shift
    if ! can_apt; then
        echo "error: $what is missing: install it (Debian/Ubuntu: apt-get install $*) and run this again" >&2
        exit 1
    fi
    echo "installing $what ($*)"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$apt_updated" = no ]; then
        apt-get update -q >/dev/null
        apt_updated=yes
    fi
    apt-get install -y -q "$@" >/dev/null
}

ensure_postgres() {
    pg_bindir >/dev/null || apt_install "PostgreSQL server binaries (initdb, pg_ctl, postgres)" postgresql
    # As root the embedded cluster runs as the postgres user, through runuser.
    if [ "$(id -u)" = 0 ] && ! command -v runuser >/dev/null 2>&1; then
        apt_install runuser util-linux
    fi
}
