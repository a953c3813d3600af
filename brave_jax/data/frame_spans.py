"""Where each JPEG frame lies inside a serialized SequenceExample, found without parsing it.

A training clip needs 16 + 64 of a record's 300 frames, but TensorFlow's parser copies
every frame into a string tensor, after the record itself was copied into one: reading
and parsing took 28 of about 85 host CPU ms per V/V clip (bench/README.md). `split_record`
walks the protobuf wire format once (a few varints per frame), returns each frame's
(start, end) byte offsets, and returns the record without its frame lists, so that
TensorFlow's own parser still reads everything else (labels, ids, the waveform) with its
exact semantics. The pipeline then copies out only the frames the sampler picked.

The frame lists must hold what `tf.io.FixedLenSequenceFeature([], tf.string)` accepts:
one bytes value per step. Anything else raises `FrameListError`, as TensorFlow's
parser would have failed on that record.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

# Wire types (protobuf encoding): varint, 64-bit, length-delimited, 32-bit.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# Field numbers: SequenceExample.feature_lists, FeatureLists.feature_list (map entries:
# key, value), FeatureList.feature, Feature.bytes_list / float_list / int64_list, BytesList.value.
_FEATURE_LISTS = 2
_MAP_ENTRY, _MAP_KEY, _MAP_VALUE = 1, 1, 2
_FEATURE = 1
_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
_VALUE = 1


class FrameListError(ValueError):
  """The record is not a well-formed SequenceExample, or a frame list holds other than one
  bytes value per step."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
  result = shift = 0
  while pos < end:
    byte = buf[pos]
    pos += 1
    result |= (byte & 0x7F) << shift
    if byte < 0x80:
      return result, pos
    shift += 7
    if shift > 63:
      break
  raise FrameListError(f'malformed varint at byte {pos}')


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
  """(field number, wire type, field start incl. tag, value start, value end) of each field."""
  pos = start
  while pos < end:
    field_start = pos
    tag, pos = _varint(buf, pos, end)
    field, wire = tag >> 3, tag & 7
    if wire == _LEN:
      size, pos = _varint(buf, pos, end)
      value_end = pos + size
    elif wire == _VARINT:
      _, value_end = _varint(buf, pos, end)
    elif wire == _FIXED64:
      value_end = pos + 8
    elif wire == _FIXED32:
      value_end = pos + 4
    else:
      raise FrameListError(f'unsupported wire type {wire} at byte {field_start}')
    if value_end > end or field == 0:
      raise FrameListError(f'field at byte {field_start} runs past its message (truncated?)')
    yield field, wire, field_start, pos, value_end
    pos = value_end


_ONE_BYTES_VALUE = 0x0A  # Tag of field 1, length-delimited: Feature.bytes_list, BytesList.value.


def _single_value_span(buf: memoryview, start: int, end: int) -> tuple[int, int] | None:
  """The span of a Feature written the usual way (one bytes_list holding one value), else None.

  The fast path: most frames are read here, with three varints and no generator."""
  if start >= end or buf[start] != _ONE_BYTES_VALUE:
    return None
  size, pos = _varint(buf, start + 1, end)
  if pos + size != end or pos >= end or buf[pos] != _ONE_BYTES_VALUE:
    return None
  size, pos = _varint(buf, pos + 1, end)
  return (pos, end) if pos + size == end else None


def _frame_spans(buf: memoryview, start: int, end: int, key: str) -> np.ndarray:
  """int64 [T, 2]: (start, end) of step t's bytes value in one FeatureList."""
  spans = []
  for field, wire, _, f_start, f_end in _fields(buf, start, end):
    if field != _FEATURE or wire != _LEN:
      continue
    usual = _single_value_span(buf, f_start, f_end)
    if usual is not None:
      spans.append(usual)
      continue
    kind, values = None, []
    for kind_field, kind_wire, _, k_start, k_end in _fields(buf, f_start, f_end):
      if kind_field not in (_BYTES_LIST, _FLOAT_LIST, _INT64_LIST) or kind_wire != _LEN:
        continue
      if kind_field != kind:  # A oneof: a later member replaces an earlier one.
        kind, values = kind_field, []
      if kind == _BYTES_LIST:  # Repeated messages merge: their values concatenate.
        values.extend((v_start, v_end) for v_field, v_wire, _, v_start, v_end
                      in _fields(buf, k_start, k_end) if v_field == _VALUE and v_wire == _LEN)
    if kind != _BYTES_LIST or len(values) != 1:
      found = {None: 'no value', _FLOAT_LIST: 'floats', _INT64_LIST: 'int64s'}.get(
          kind, f'{len(values)} bytes values')
      raise FrameListError(f'feature list {key!r} step {len(spans)}: expected one encoded '
                           f'frame (bytes), found {found}')
    spans.append(values[0])
  return np.asarray(spans, np.int64).reshape(-1, 2)


def _len_prefix(field: int, size: int) -> bytes:
  out = bytearray()
  for value in ((field << 3) | _LEN, size):
    while value >= 0x80:
      out.append((value & 0x7F) | 0x80)
      value >>= 7
    out.append(value)
  return bytes(out)


def split_record(record: bytes | memoryview, frame_keys: Sequence[str]
                 ) -> tuple[bytes, dict[str, np.ndarray]]:
  """(the record without the `frame_keys` feature lists, {key: int64 [T, 2] frame spans}).

  Spans are byte offsets into `record`; a key the record lacks gets [0, 2] (TensorFlow's
  `allow_missing`). Map semantics follow protobuf's: a key given twice keeps its last list.
  """
  buf = memoryview(record)
  wanted = {k.encode(): k for k in frame_keys}
  spans = {k: np.zeros((0, 2), np.int64) for k in frame_keys}
  kept_top, kept_entries = [], []
  for field, wire, field_start, start, end in _fields(buf, 0, len(buf)):
    if field != _FEATURE_LISTS or wire != _LEN:
      kept_top.append(buf[field_start:end])
      continue
    for e_field, e_wire, e_start, v_start, v_end in _fields(buf, start, end):
      key, value = None, (v_end, v_end)
      if e_field == _MAP_ENTRY and e_wire == _LEN:
        for m_field, m_wire, _, m_start, m_end in _fields(buf, v_start, v_end):
          if m_field == _MAP_KEY and m_wire == _LEN:
            key = bytes(buf[m_start:m_end])
          elif m_field == _MAP_VALUE and m_wire == _LEN:
            value = (m_start, m_end)
      if key in wanted:
        spans[wanted[key]] = _frame_spans(buf, *value, key=wanted[key])
      else:
        kept_entries.append(buf[e_start:v_end])
  if kept_entries:  # One join: the waveform can be megabytes.
    kept_top.append(_len_prefix(_FEATURE_LISTS, sum(len(e) for e in kept_entries)))
  return b''.join(kept_top + kept_entries), spans


def frames_at(record: bytes | memoryview, spans: np.ndarray) -> np.ndarray:
  """Object array [K] of the encoded frames at `spans` (int64 [K, 2]), each its own bytes."""
  buf = memoryview(record)
  out = np.empty(len(spans), object)
  for i, (start, end) in enumerate(spans.tolist()):
    out[i] = bytes(buf[start:end])
  return out
