#!/bin/sh
# Screenshots of the sandbox pages (landing, launcher, launch ready, standalone tab, consent, sample app) at
# desktop (1280×800) and phone (390×844) size, taken by the sandbox's browser test after axe-core passed
# on each page. Needs Chromium (CHROMIUM_PATH, default /usr/bin/chromium).
#   scripts/sandbox-screenshots.sh [directory]     (default: screenshots/sandbox)
set -eu
cd "$(dirname "$0")/.."
dir="${1:-screenshots/sandbox}"
mkdir -p "$dir"
SCREENSHOT_DIR="$(cd "$dir" && pwd)" REQUIRE_BROWSER=true node --import tsx --test --test-timeout=180000 test/e2e/sandbox.test.ts
ls "$dir"
