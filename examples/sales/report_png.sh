#!/usr/bin/env bash
# Remake docs/report.png, the picture of this example's report in the README: run the example
# in a temporary copy, print out/report.xlsx to PDF with LibreOffice (one page per sheet) and
# render the top of page 1, the Orders sheet, at 80 dpi. Needs soffice and pdftoppm (poppler-utils).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/sales"
cp -r "$here/inbox" "$here/prices.xlsx" "$here/pipeline.py" "$tmp/sales/"
filepipe -p "$tmp/sales/pipeline.py" run >/dev/null
soffice -env:UserInstallation="file://$tmp/lo-profile" --headless \
    --convert-to 'pdf:calc_pdf_Export:{"SinglePageSheets":{"type":"boolean","value":"true"}}' \
    --outdir "$tmp" "$tmp/sales/out/report.xlsx" >/dev/null
# the header and the first 22 orders, with a margin of 8 pixels on the left and at the top
pdftoppm -png -r 80 -f 1 -l 1 -x -8 -y -8 -W 794 -H 372 -singlefile "$tmp/report.pdf" \
    "$here/../../docs/report"
echo "wrote $(cd "$here/../../docs" && pwd)/report.png"
