"""TFRecord files as an index of records that can be read in any order.

Why not `tf.data.TFRecordDataset`: it reads a file front to back only, so a
training order that is a pure function of the step (exact resume, a global
shuffle) needs random access; and on a damaged file it raises a bare
DataLossError naming neither the file nor the record, then loses the rest of
the file. Here a file is first indexed (one 12-byte header read per record),
then records are read by offset with both CRCs checked, and every failure
names the file, the record and the byte offset.

Framing (TensorFlow's): uint64 length | uint32 masked crc32c(length) |
data[length] | uint32 masked crc32c(data), little-endian.

Local files are read with os.pread (thread-safe, releases the GIL); remote
URLs (gs://...) through tf.io.gfile, one small ranged read per record header
when indexing (run once per training start, in parallel over files).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import mmap
import os
import struct
import threading
from typing import Callable, Sequence

import crc32c
import numpy as np

HEADER_BYTES = 12  # uint64 length + uint32 masked crc of the length.
FOOTER_BYTES = 4  # uint32 masked crc of the data.
_MASK_DELTA = 0xA282EAD8
_RESYNC_CHUNK = 64 << 20  # Bytes searched at a time for the next valid header.


class RecordError(IOError):
  """A record could not be read; the message names the file, record and byte offset."""


def masked_crc(data: bytes | memoryview) -> int:
  """TFRecord's masked crc32c (rotated and offset so CRCs of CRCs stay well mixed)."""
  crc = crc32c.crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def is_remote(path: str) -> bool:
  return '://' in path


def file_size(path: str) -> int:
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return int(tf.io.gfile.stat(path).length)
  return os.path.getsize(path)


class _RangeReader:
  """Reads byte ranges of files from many threads at once (local fds are shared and cached)."""

  def __init__(self):
    self._fds: dict[str, int] = {}
    self._maps: dict[str, mmap.mmap | bytes] = {}
    self._lock = threading.Lock()

  def read(self, path: str, offset: int, size: int) -> bytes:
    if is_remote(path):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      with tf.io.gfile.GFile(path, 'rb') as f:  # GFile is not thread-safe: one per read.
        f.seek(offset)
        return f.read(size)
    fd = self._fds.get(path)
    if fd is None:
      with self._lock:
        fd = self._fds.get(path)
        if fd is None:
          fd = self._fds[path] = os.open(path, os.O_RDONLY)
    return os.pread(fd, size, offset)

  def view(self, path: str, offset: int, size: int) -> memoryview | bytes:
    """Bytes [offset, offset + size) of a local file as a view of its memory map (no copy;
    fewer bytes where the file now ends sooner), or read, for remote files."""
    if is_remote(path):
      return self.read(path, offset, size)
    mapped = self._maps.get(path)
    if mapped is None or len(mapped) < offset + size:  # Remapped when the file grew.
      with self._lock:
        mapped = self._maps.get(path)
        if mapped is None or len(mapped) < offset + size:
          with open(path, 'rb') as f:
            size_now = os.fstat(f.fileno()).st_size
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size_now else b''
          self._maps[path] = mapped
    # The map's length is the file's when mapped: a file cut shorter since would fault
    # (SIGBUS) on reading, so the view ends where the file ends now.
    end = min(offset + size, self._size_now(path), len(mapped))
    return memoryview(mapped)[offset:max(offset, end)]

  def _size_now(self, path: str) -> int:
    try:
      return os.stat(path).st_size
    except OSError:
      return 0

  def close(self) -> None:
    with self._lock:
      for fd in self._fds.values():
        os.close(fd)
      self._fds.clear()
      self._maps.clear()  # Unmapped when the last view of each is gone.


def _header_length(header: bytes) -> int | None:
  """The record length a 12-byte header declares, or None when its CRC does not match."""
  if len(header) < HEADER_BYTES:
    return None
  length_bytes = header[:8]
  if struct.unpack('<I', header[8:12])[0] != masked_crc(length_bytes):
    return None
  return struct.unpack('<Q', length_bytes)[0]


@dataclasses.dataclass
class Damage:
  """A stretch of a file whose records cannot be read."""
  path: str
  record: int  # Position in the file of the first lost record (records before it read fine).
  start: int  # Byte offset where the damage starts.
  end: int  # Byte offset where readable records resume (the file size if none do).
  lost: int  # Records lost: exact for a cut-short last record, estimated for a damaged span.
  reason: str

  def describe(self) -> str:
    span = f'bytes {self.start}..{self.end}'
    about = '' if self.lost == 1 else 'about '
    return (f'{self.path}: record {self.record} onwards, {span}: {self.reason}; '
            f'{about}{self.lost} record(s) lost')


@dataclasses.dataclass
class FileIndex:
  """Where each readable record of one file starts and how long it is."""
  path: str
  size: int
  offsets: np.ndarray  # int64 [R]: byte offset of each record's header.
  lengths: np.ndarray  # int64 [R]: data bytes of each record.
  damage: list[Damage]


def _resync(path: str, reader: _RangeReader, start: int, size: int) -> int | None:
  """The offset of the first valid record header at or after `start`, or None.

  A valid header is a length that fits in the file plus a matching CRC of
  that length: a false match has odds of 2^-32 per candidate, and candidates
  are pre-filtered (the length's high 4 bytes are zero: records < 4 GiB).
  """
  pos = start
  while pos + HEADER_BYTES + FOOTER_BYTES <= size:
    chunk = reader.read(path, pos, min(_RESYNC_CHUNK + HEADER_BYTES, size - pos))
    b = np.frombuffer(chunk, np.uint8)
    n = len(b) - HEADER_BYTES + 1
    if n <= 0:
      break
    zero_high = ((b[4:4 + n] == 0) & (b[5:5 + n] == 0) & (b[6:6 + n] == 0) & (b[7:7 + n] == 0))
    for i in np.flatnonzero(zero_high):
      length = _header_length(chunk[i:i + HEADER_BYTES])
      if length is not None and pos + i + HEADER_BYTES + length + FOOTER_BYTES <= size:
        return pos + int(i)
    pos += n
  return None


def index_file(path: str, reader: _RangeReader | None = None) -> FileIndex:
  """Walks one file's record headers. Damage is noted (and skipped over) rather than raised.

  Raises RecordError when the file holds no valid record header at all, i.e.
  it is not a TFRecord file (a JSON summary, a text file, random bytes).
  """
  reader = reader or _RangeReader()
  size = file_size(path)
  offsets, lengths, damage = [], [], []
  pos = 0
  while pos < size:
    header = reader.read(path, pos, HEADER_BYTES)
    length = _header_length(header)
    if length is not None and pos + HEADER_BYTES + length + FOOTER_BYTES <= size:
      offsets.append(pos)
      lengths.append(length)
      pos += HEADER_BYTES + length + FOOTER_BYTES
      continue
    # Damage: a cut-short last record, or a corrupted header mid-file.
    if length is not None:
      damage.append(Damage(path, len(offsets), pos, size, 1,
                           f'the record declares {length} bytes but the file ends at byte {size} '
                           '(a truncated file)'))
      break
    resume = _resync(path, reader, pos + 1, size)
    if resume is None and not offsets:
      start = bytes(header[:16])
      raise RecordError(f'{path} is not a TFRecord file: no valid record header found '
                        f'(it starts with {start!r}); remove it from the shard list')
    end = size if resume is None else resume
    typical = int(np.median(lengths)) + HEADER_BYTES + FOOTER_BYTES if lengths else end - pos
    lost = max(1, round((end - pos) / max(typical, 1)))
    damage.append(Damage(path, len(offsets), pos, end, lost, 'corrupted record header'))
    if resume is None:
      break
    pos = resume
  return FileIndex(path, size, np.asarray(offsets, np.int64), np.asarray(lengths, np.int64),
                   damage)


def index_files(paths: Sequence[str], threads: int = 16) -> list[FileIndex]:
  """index_file over many files, in parallel (remote headers are latency-bound), in order."""
  reader = _RangeReader()
  try:
    if len(paths) <= 1:
      return [index_file(p, reader) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(min(threads, len(paths))) as pool:
      return list(pool.map(lambda p: index_file(p, reader), paths))
  finally:
    reader.close()


class RandomAccessReader:
  """Reads records of indexed files by (file, offset, length), checking both CRCs."""

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    self._reader = _RangeReader()

  def read(self, file_id: int, offset: int, length: int, record: int | None = None) -> bytes:
    """The record's data; RecordError (naming file, record and offset) on any damage."""
    return self._checked(self._reader.read, file_id, offset, length, record)

  def view(self, file_id: int, offset: int, length: int, record: int | None = None
           ) -> memoryview | bytes:
    """As `read`, but a local file's record is a view of its memory map: not copied, and
    only the pages touched (by the CRC check, then by what is cut out of it) are read."""
    return self._checked(self._reader.view, file_id, offset, length, record)

  def _checked(self, read_range: Callable[[str, int, int], memoryview | bytes], file_id: int,
               offset: int, length: int, record: int | None) -> memoryview | bytes:
    path = self.paths[file_id]
    where = f'{path}: record {record} at byte {offset}' if record is not None else \
        f'{path}: record at byte {offset}'
    try:
      header = read_range(path, offset, HEADER_BYTES)
      data = read_range(path, offset + HEADER_BYTES, length)
      footer = read_range(path, offset + HEADER_BYTES + length, FOOTER_BYTES)
    except OSError as e:
      raise RecordError(f'{where}: read failed ({e})') from e
    if len(data) < length or len(footer) < FOOTER_BYTES:
      raise RecordError(f'{where}: the file ends inside the record (truncated since indexing?)')
    if _header_length(header) != length:
      raise RecordError(f'{where}: record header corrupt or changed (file rewritten since '
                        'indexing?)')
    if struct.unpack('<I', footer)[0] != masked_crc(data):
      raise RecordError(f'{where}: data CRC mismatch (corrupted bytes)')
    return data

  def close(self) -> None:
    self._reader.close()
