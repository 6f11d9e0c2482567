#!/bin/sh
# Renders the demo's app icons (PNG, for the web app manifest and iOS) from its SVG drawings with librsvg. The
# PNGs are committed; run this after changing demo/icon.svg or demo/icon-maskable.svg.
set -eu
cd "$(dirname "$0")/.."
sh tools/setup.sh --icons
out=demo/icons
mkdir -p "$out"
rsvg-convert -w 192 -h 192 demo/icon.svg -o "$out/icon-192.png"
rsvg-convert -w 512 -h 512 demo/icon.svg -o "$out/icon-512.png"
rsvg-convert -w 512 -h 512 demo/icon-maskable.svg -o "$out/maskable-512.png"
# iOS rounds the corners itself and shows transparency as black: the full-bleed drawing suits it.
rsvg-convert -w 180 -h 180 demo/icon-maskable.svg -o "$out/apple-touch-icon.png"
ls -l "$out"
