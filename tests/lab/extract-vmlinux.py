#!/usr/bin/env python3
# extract-vmlinux.py BZIMAGE OUT: write the uncompressed ELF kernel inside a
# bzImage (Xen boots dom0 from it much faster under TCG than from the
# xz-compressed image).  Like Linux's scripts/extract-vmlinux: try each
# compressed-stream magic and keep the first payload that is an ELF file.
import gzip, lzma, sys, zlib

data = open(sys.argv[1], "rb").read()
cands = [(b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
         (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b))]
for magic, dec in cands:
    off = data.find(magic)
    while off >= 0:
        try:
            out = dec(data[off:])
            if out[:4] == b"\x7fELF":
                open(sys.argv[2], "wb").write(out)
                sys.exit(0)
        except Exception:
            pass
        off = data.find(magic, off + 1)
sys.exit("extract-vmlinux: no ELF kernel found in " + sys.argv[1])
