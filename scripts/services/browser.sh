# Sourced by scripts/test: what the admin page's browser test needs
# (service/tests/e2e.rs), installed idempotently:
#
#   - Debian's `chromium` at /usr/bin/chromium (apt-get, as root or with sudo),
#     since Playwright's own browser download cannot be used here;
#   - `npm ci` in service/e2e when its node_modules is missing or older than
#     its package-lock.json (playwright-core, pinned there).
#
# Exports COUNTERS_CHROMIUM for the test. Nothing listens: the test starts
# the service on a free loopback port itself. Under CI=true a missing piece
# fails here; elsewhere it is reported and the test skips loudly.

browser_e2e_dir="$PWD/service/e2e"

browser_fail() {
    echo "browser.sh: $*" >&2
    if [ "${CI:-}" = "true" ]; then
        return 1
    fi
    echo "browser.sh: the admin page browser test will be skipped" >&2
}

browser_install_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return
    fi
    echo "installing chromium from Debian's packages"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null ||
        browser_fail "could not install chromium"
}

browser_install_node_modules() {
    if ! command -v npm >/dev/null; then
        browser_fail "npm is not installed"
        return
    fi
    local lock="$browser_e2e_dir/package-lock.json"
    local stamp="$browser_e2e_dir/node_modules/.package-lock.json"
    # npm ci writes node_modules/.package-lock.json; stale if the committed
    # lock file is newer, or if playwright-core is missing.
    if [ -f "$stamp" ] && [ ! "$lock" -nt "$stamp" ] &&
        [ -f "$browser_e2e_dir/node_modules/playwright-core/package.json" ]; then
        return
    fi
    echo "npm ci in service/e2e"
    (cd "$browser_e2e_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
        browser_fail "npm ci failed in service/e2e"
}

browser_install_chromium
browser_install_node_modules
if [ -x /usr/bin/chromium ]; then
    export COUNTERS_CHROMIUM=/usr/bin/chromium
    echo "browser: $(/usr/bin/chromium --version 2>/dev/null | head -1); playwright-core $(
        node -p "require('$browser_e2e_dir/node_modules/playwright-core/package.json').version" 2>/dev/null || echo missing)"
fi
