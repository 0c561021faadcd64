#!/usr/bin/env bash
# Debian packages the test suite uses besides Python's: kcat (an independent Kafka client the
# status tests compare against), and Chromium with its WebDriver for the browser test.
# Installed when missing; needs root (or sudo) the first time.
set -euo pipefail

missing=()
command -v kcat >/dev/null || missing+=(kcat)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
(( ${#missing[@]} )) || exit 0

if (( EUID == 0 )); then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
  echo "tools: missing ${missing[*]}; install them with: apt-get install -y ${missing[*]}" >&2; exit 1
fi
echo "tools: installing ${missing[*]} from Debian"
"${SUDO[@]}" apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
