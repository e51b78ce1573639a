#!/usr/bin/env bash
# Render docs/architecture.mmd (Mermaid) to docs/architecture.png, offline after the first run.
#
# mermaid-cli is not used: it downloads its own browser through puppeteer. Instead the pinned
# `mermaid` npm package is installed once into a cache outside the repository, a small HTML page
# loads it from there and renders the source, and Debian's headless Chromium takes the picture:
#   1. --dump-dom gives the rendered SVG, whose viewBox is the diagram's size;
#   2. --screenshot with a window of exactly that size (plus a margin), at 1.5x for legibility.
# The PNG gets a tEXt chunk `mermaid-source-sha256` so tests/unit/test_docs.py can tell a stale
# image from a current one.
#
#   scripts/render-diagram.sh            # needs node/npm (first run only) and chromium
# Environment: MERMAID_CACHE (default ~/.cache/flightpipe/mermaid-<version>), CHROMIUM.
set -euo pipefail
cd "$(dirname "$0")/.."

MERMAID_VERSION=11.17.2
CACHE="${MERMAID_CACHE:-$HOME/.cache/flightpipe/mermaid-$MERMAID_VERSION}"
CHROMIUM="${CHROMIUM:-chromium}"
SRC=docs/architecture.mmd
OUT=docs/architecture.png
PYTHON="${PYTHON:-python3}"

command -v "$CHROMIUM" >/dev/null || { echo "render-diagram: install chromium (apt-get install -y chromium)" >&2; exit 2; }
MERMAID_JS="$CACHE/node_modules/mermaid/dist/mermaid.min.js"
if [[ ! -f "$MERMAID_JS" ]]; then
  command -v npm >/dev/null || { echo "render-diagram: npm is needed once to fetch mermaid@$MERMAID_VERSION" >&2; exit 2; }
  npm install --silent --no-audit --no-fund --prefix "$CACHE" "mermaid@$MERMAID_VERSION" >/dev/null
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" - "$SRC" "$MERMAID_JS" "$WORK/page.html" <<'PY'
import html, sys
src, js, page = sys.argv[1:4]
source = open(src, encoding="utf-8").read()
open(page, "w", encoding="utf-8").write(f"""<!doctype html>
<html><head><meta charset="utf-8">
<style>html,body{{margin:0;padding:0;background:#fff}} #d{{display:inline-block;padding:24px}}</style>
<script src="file://{html.escape(js)}"></script></head>
<body><div id="d"><pre class="mermaid">{html.escape(source)}</pre></div>
<script>
mermaid.initialize({{startOnLoad: true, securityLevel: "strict", theme: "default",
  fontFamily: "DejaVu Sans, Arial, sans-serif", flowchart: {{useMaxWidth: false, htmlLabels: true, wrappingWidth: 260}}}});
</script></body></html>
""")
PY

chrome() {
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$WORK/profile" --virtual-time-budget=5000 "$@" "file://$WORK/page.html" 2>/dev/null
}

chrome --dump-dom > "$WORK/dom.html"
read -r WIDTH HEIGHT < <("$PYTHON" - "$WORK/dom.html" <<'PY'
import math, re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'<svg[^>]*viewBox="([-\d.]+) ([-\d.]+) ([\d.]+) ([\d.]+)"', dom)
if not m:
    sys.exit("render-diagram: mermaid produced no SVG (a syntax error in the source?)")
print(math.ceil(float(m.group(3))) + 48, math.ceil(float(m.group(4))) + 48)
PY
)
chrome --force-device-scale-factor=1.5 --window-size="$WIDTH,$HEIGHT" --screenshot="$WORK/out.png" >/dev/null

"$PYTHON" - "$WORK/out.png" "$SRC" "$OUT" <<'PY'
import hashlib, struct, sys, zlib
png, src, out = sys.argv[1:4]
data = open(png, "rb").read()
digest = hashlib.sha256(open(src, "rb").read()).hexdigest()
body = b"mermaid-source-sha256\0" + digest.encode()
chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
# Insert right after IHDR (8-byte signature + 25-byte IHDR chunk).
open(out, "wb").write(data[:33] + chunk + data[33:])
PY
echo "render-diagram: wrote $OUT (${WIDTH}x${HEIGHT} CSS px at 1.5x)" >&2
