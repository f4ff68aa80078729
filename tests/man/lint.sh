#!/usr/bin/env bash
# Renders a generated man page with warnings on and fails on any warning.
# mandoc's "skipping paragraph macro" is left out: scdoc emits a .PP before
# every paragraph, which mandoc notes and drops; the rendering is unaffected.
set -euo pipefail
page=${1:?usage: lint.sh PAGE}
[[ -s $page ]] || { echo "lint: $page is missing or empty" >&2; exit 1; }
status=0
groff_out=$(groff -ww -z -man -Tutf8 "$page" 2>&1) || status=1
if [[ -n $groff_out ]]; then echo "$groff_out"; status=1; fi
mandoc_out=$(mandoc -Tlint -W warning "$page" 2>&1 | grep -v 'skipping paragraph macro' || true)
if [[ -n $mandoc_out ]]; then echo "$mandoc_out"; status=1; fi
# Every page has the sections an operator looks for.
for section in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT FILES "EXIT STATUS" EXAMPLES "SEE ALSO"; do
  if ! grep -q "^\.SH \"\?$section" "$page" && ! grep -q "^\.SH \"\?[A-Z ]*$section" "$page"; then
    echo "lint: $page has no $section section"; status=1
  fi
done
exit $status
