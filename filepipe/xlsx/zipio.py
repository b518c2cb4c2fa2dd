"""Writing the new zip package: every member copied as it is (compressed bytes and all)
unless the plan replaces or deletes it, the sheet part streamed as it is generated, and a
structural check of what was written."""

from __future__ import annotations

import queue
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import IO, Any

from .package import Package
from .plan import Plan

_ZIP_WRITER_ATTRS = ("fp", "start_dir", "filelist", "NameToInfo", "_writing", "_didModify", "_seekable")
_ZIP64_FROM = 1_500_000_000  # estimated sheet size (bytes) from which the part is zip64


def _zipinfo(name: str, like: zipfile.ZipInfo | None = None) -> zipfile.ZipInfo:
    """A ZipInfo for member `name`: a copy of `like`'s (name, date, compression,
    attributes, comment, size), or a new deflated member dated now."""
    if like is not None:
        zi = zipfile.ZipInfo(like.filename, like.date_time)
        zi.compress_type = like.compress_type
        zi.external_attr = like.external_attr
        zi.create_system = like.create_system
        zi.comment = like.comment
        zi.file_size = like.file_size
        return zi
    zi = zipfile.ZipInfo(name, time.localtime()[:6])
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = 0o600 << 16
    return zi


def _copy_raw(src: IO[bytes], info: zipfile.ZipInfo, zout: zipfile.ZipFile) -> bool:
    """Copy a member's compressed bytes as they are (no inflate/deflate).

    zipfile has no public API for this; it uses the same ZipFile attributes as
    ZipFile.writestr. Returns False, having written nothing, when that is not possible
    (then the caller recompresses)."""
    if info.flag_bits & 0x1 or not all(hasattr(zout, a) for a in _ZIP_WRITER_ATTRS):
        return False
    writer: Any = zout  # its private writer state, not in typeshed (checked just above)
    if writer._writing or not writer._seekable:
        return False
    src.seek(info.header_offset)
    fh = src.read(30)
    if len(fh) != 30 or fh[:4] != b"PK\x03\x04":
        return False
    name_len, extra_len = struct.unpack("<HH", fh[26:30])
    zi = _zipinfo(info.filename, info)
    zi.CRC = info.CRC
    zi.compress_size = info.compress_size
    zi.file_size = info.file_size
    zi.flag_bits = info.flag_bits & 0x06  # compression options only; sizes go in the header
    fp = zout.fp
    assert fp is not None  # an open archive being written
    fp.seek(zout.start_dir)
    zi.header_offset = fp.tell()
    writer._didModify = True
    fp.write(zi.FileHeader())
    src.seek(info.header_offset + 30 + name_len + extra_len)
    _copy_bytes(src, fp, info.compress_size, info.filename)
    zout.filelist.append(zi)
    zout.NameToInfo[zi.filename] = zi
    zout.start_dir = fp.tell()
    return True


def _copy_bytes(src: IO[bytes], dst: Any, size: int, name: str) -> None:
    """Copy `size` bytes of member `name` from `src` to `dst`, 1 MiB at a time."""
    remaining = size
    while remaining:
        buf = src.read(min(remaining, 1 << 20))
        if not buf:
            raise zipfile.BadZipFile(f"member {name} is truncated")
        dst.write(buf)
        remaining -= len(buf)


def _write_pieces(dst: IO[bytes], pieces: Iterator[bytes]) -> None:
    """Write `pieces` to `dst` in a second thread: deflate (which releases the GIL) runs
    while the next piece of XML is generated."""
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while (piece := q.get()) is not None:
                dst.write(piece)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)
            while q.get() is not None:
                pass

    worker = threading.Thread(target=consume, name="filepipe-xlsx-deflate", daemon=True)
    worker.start()
    try:
        for piece in pieces:
            if errors:
                break
            q.put(piece)
    finally:
        q.put(None)
        worker.join()
    if errors:
        raise errors[0]


def write_package(src: IO[bytes], zin: zipfile.ZipFile, zout: zipfile.ZipFile, pkg: Package,
                  plan: Plan, sheet_chunks: Iterator[bytes], styles_xml: bytes,
                  est_size: int, sheet_comment: bytes = b"") -> None:
    """Write the package `pkg` (read from `zin`, whose file is `src`) to `zout` as `plan`
    says, in the original member order; the sheet part is `sheet_chunks` (about
    `est_size` bytes, with the zip member comment `sheet_comment`), the styles part
    `styles_xml`. New parts go last."""
    done: set[str] = set()
    replace = dict(plan.replace)
    replace[pkg.member(plan.styles_part)] = styles_xml

    def write_sheet_part(name: str) -> None:
        with zout.open(name, "w", force_zip64=est_size > _ZIP64_FROM) as dst:
            _write_pieces(dst, sheet_chunks)
        zout.getinfo(name).comment = sheet_comment  # goes in the central directory, at close

    for info in pkg.infos:
        lower = info.filename.lower()
        if lower in plan.delete or lower in done:
            continue
        done.add(lower)
        if lower == plan.sheet_part.lower():
            write_sheet_part(info.filename)
        elif info.filename in replace:
            zi = _zipinfo(info.filename, info)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(zi, replace.pop(info.filename))
        elif not _copy_raw(src, info, zout):
            zi = _zipinfo(info.filename, info)
            with zin.open(info) as f, zout.open(zi, "w") as dst:
                while buf := f.read(1 << 20):
                    dst.write(buf)
    for name, data in replace.items():  # parts that did not exist (e.g. a new styles.xml)
        if name.lower() not in done:
            zout.writestr(_zipinfo(name), data)
            done.add(name.lower())
    if plan.sheet_part.lower() not in done:
        write_sheet_part(plan.sheet_part)
    zout.comment = zin.comment


def verify_zip(f: IO[bytes], expected: list[str]) -> None:
    """Cheap structural check of the file just written: central directory and every local
    header (no decompression)."""
    f.seek(0)
    with zipfile.ZipFile(f) as z:
        names = z.namelist()
        if names != expected:
            raise RuntimeError(f"filepipe.xlsx wrote an unexpected member list: {names}")
        for info in z.infolist():
            z.open(info).close()
