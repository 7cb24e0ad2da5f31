#!/usr/bin/env bash
# Builds the book (docs/ -> docs/book/) with the pinned mdBook and checks
# every link and anchor in it with lychee, offline: a link to a page or a
# heading that does not exist fails. Links leaving the book are not fetched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOLS="$(scripts/build-docs-tools.sh)"

rm -rf docs/book
"$TOOLS/mdbook" build docs
# --include-fragments: a link to a missing heading (page.html#nowhere) fails
# like a link to a missing page. The print page repeats every chapter; the
# 404 page's links are rooted at the published site's path (site-url).
"$TOOLS/lychee" --offline --no-progress --include-fragments \
  --exclude-path docs/book/print.html --exclude-path docs/book/404.html \
  docs/book
# The README's links into the book, checked as GitHub renders them.
"$TOOLS/lychee" --offline --no-progress --include-fragments README.md
