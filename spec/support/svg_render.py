"""Render an SVG file the way a person would see it, in headless Chromium,
and check the picture is not blank.

    python3 svg_render.py FILE.svg OUT.png

Prints "colours N dark D" (distinct colours in the screenshot, and the share
of pixels darker than the page) and exits 0, or says why it could not.
The PNG is decoded here (zlib and the five PNG filters), so nothing beyond
python3 and Debian's chromium is needed."""
import os
import struct
import subprocess
import sys
import tempfile
import zlib


def screenshot(svg, png):
    profile = tempfile.mkdtemp(prefix="avideo-chromium-")
    cmd = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--user-data-dir=" + profile, "--window-size=1200,900", "--screenshot=" + png,
           "file://" + os.path.abspath(svg)]
    # a sanitizer runtime preloaded into the specs' Lua is not Chromium's
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False, env=env)
    subprocess.run(["rm", "-rf", profile], check=False)
    if not os.path.exists(png) or os.path.getsize(png) == 0:
        sys.exit("chromium made no screenshot")


def decode(png):
    data = open(png, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit("not a PNG")
    pos, idat = 8, b""
    width = height = depth = ctype = None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if depth != 8 or ctype not in (2, 6):
        sys.exit("unexpected PNG format: depth %s colour type %s" % (depth, ctype))
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, bpp, rows


def main():
    svg, png = sys.argv[1], sys.argv[2]
    screenshot(svg, png)
    width, height, bpp, rows = decode(png)
    colours, dark, total = set(), 0, 0
    for line in rows[::2]:
        for x in range(0, width * bpp, bpp * 2):
            r, g, b = line[x], line[x + 1], line[x + 2]
            colours.add((r, g, b))
            total += 1
            if r + g + b < 600:
                dark += 1
    print("colours %d dark %.4f" % (len(colours), dark / max(total, 1)))


main()
