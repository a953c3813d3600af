"""The training reader's frame spans: the same frames and the same other features as
TensorFlow's parser, on records written every way the format allows, and the records
TensorFlow's parser refuses refused too."""
import numpy as np
import pytest
import tensorflow as tf

from brave_jax.data import dmvr_format
from brave_jax.data import frame_spans
from brave_jax.data import reader

KEYS = (dmvr_format.IMAGE_KEY, dmvr_format.FLOW_KEY)


def _clip_record(num_frames: int = 5, flow: bool = True, audio: bool = True) -> bytes:
  rng = np.random.default_rng(num_frames)
  jpegs = [bytes(rng.integers(0, 256, 40 + 300 * i, dtype=np.uint8)) for i in range(num_frames)]
  return dmvr_format.encode_clip(dmvr_format.Clip(
      encoded_frames=jpegs, encoded_flow=jpegs[::-1][:-1] if flow else None,
      waveform=rng.uniform(-1, 1, 700).astype(np.float32) if audio else None,
      label_index=[3, 7], video_id='clip-a', fps=25.0))


def _tf_parse(record: bytes) -> dict[str, np.ndarray]:
  out = reader.parse_example(tf.constant(record), video=True, flow=True, audio=True,
                             all_labels=True, clip_id=True)
  return {k: v.numpy() for k, v in out.items()}


def _split_parse(record: bytes) -> dict[str, np.ndarray]:
  rest, spans = frame_spans.split_record(record, KEYS)
  out = reader.parse_example(tf.constant(rest), video=False, audio=True, all_labels=True,
                             clip_id=True)
  out = {k: v.numpy() for k, v in out.items()}
  out['video'] = frame_spans.frames_at(record, spans[dmvr_format.IMAGE_KEY])
  out['flow'] = frame_spans.frames_at(record, spans[dmvr_format.FLOW_KEY])
  return out


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
  assert sorted(a) == sorted(b)
  for k in a:
    assert np.shape(a[k]) == np.shape(b[k]), k
    assert list(np.ravel(a[k])) == list(np.ravel(b[k])), k


def _reordered(record: bytes) -> bytes:
  """The same content with feature lists before the context and frame lists split in two
  FeatureLists fields (both are valid protobuf; writers other than ours may do either)."""
  ex = tf.train.SequenceExample.FromString(record)
  parts = []
  for key, feature_list in ex.feature_lists.feature_list.items():
    one = tf.train.SequenceExample()
    one.feature_lists.feature_list[key].CopyFrom(feature_list)
    parts.append(one.SerializeToString())
  context = tf.train.SequenceExample(context=ex.context).SerializeToString()
  return b''.join(parts) + context


@pytest.mark.parametrize('build', [
    lambda: _clip_record(),
    lambda: _reordered(_clip_record(7)),
    lambda: _clip_record(flow=False),
    lambda: _clip_record(audio=False),
    lambda: _clip_record(num_frames=1),
], ids=['as_written', 'reordered', 'no_flow', 'no_audio', 'one_frame'])
def test_split_matches_tensorflow(build):
  record = build()
  _assert_same(_tf_parse(record), _split_parse(record))


def test_the_record_minus_its_frames_is_what_tensorflow_is_given():
  record = _clip_record()
  rest, spans = frame_spans.split_record(record, KEYS)
  assert len(rest) < len(record) - sum(int(np.sum(s[:, 1] - s[:, 0])) for s in spans.values())
  assert not tf.train.SequenceExample.FromString(rest).feature_lists.feature_list.get(
      dmvr_format.IMAGE_KEY)


def test_graph_form_cuts_the_same_frames():
  """reader.frames_on_demand (substr on a tensor) gives what the pipeline's reader cuts."""
  record = _clip_record(6)
  parts = reader.frames_on_demand(tf.constant(record), KEYS)
  positions = tf.constant([5, 0, 0, 3])
  frames = parts.take(parts.frames(dmvr_format.IMAGE_KEY, positions)).numpy()
  assert list(frames) == [_tf_parse(record)['video'][i] for i in (5, 0, 0, 3)]

  @tf.function  # Traced, numpy_function hands the record over as bytes, not as an array.
  def traced(serialized):
    parts = reader.frames_on_demand(serialized, KEYS)
    return parts.take(parts.frames(dmvr_format.IMAGE_KEY, positions))
  assert list(traced(tf.constant(record)).numpy()) == list(frames)


def _with_image_feature(feature: tf.train.Feature) -> bytes:
  ex = tf.train.SequenceExample.FromString(_clip_record(3))
  ex.feature_lists.feature_list[dmvr_format.IMAGE_KEY].feature.append(feature)
  return ex.SerializeToString()


@pytest.mark.parametrize('feature, found', [
    (tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'a', b'b'])), '2 bytes values'),
    (tf.train.Feature(float_list=tf.train.FloatList(value=[1.0])), 'floats'),
    (tf.train.Feature(), 'no value'),
])
def test_frame_steps_tensorflow_refuses_are_refused(feature, found):
  record = _with_image_feature(feature)
  with pytest.raises(tf.errors.InvalidArgumentError):  # The control: TF's parser refuses it.
    _tf_parse(record)
  with pytest.raises(frame_spans.FrameListError, match=f'image/encoded.*step 3.*{found}'):
    frame_spans.split_record(record, KEYS)


@pytest.mark.parametrize('damage', [lambda r: r[:-7], lambda r: b'\xff' + r, lambda r: b'\x0e' + r],
                         ids=['truncated', 'bad_varint_tag', 'bad_wire_type'])
def test_damaged_bytes_are_refused(damage):
  with pytest.raises(frame_spans.FrameListError):
    frame_spans.split_record(damage(_clip_record()), KEYS)


def test_missing_frame_list_gives_no_spans():
  rest, spans = frame_spans.split_record(_clip_record(flow=False), KEYS)
  assert spans[dmvr_format.FLOW_KEY].shape == (0, 2)
  assert spans[dmvr_format.IMAGE_KEY].shape == (5, 2)


@pytest.mark.parametrize('max_held', [16, 0], ids=['held', 'evicted_and_read_again'])
def test_pipeline_reader_cuts_frames_from_the_shards(tmp_path, max_held):
  """The training reader gives TF's frames, from the record it held or, evicted, read again."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  records = [_clip_record(n) for n in (4, 6)]
  dmvr_format.write_shards(records, str(tmp_path), 'train', 1)
  index = reader.index_shards(reader.list_shards(str(tmp_path)))
  read, _ = pipeline._frames_on_demand_reader(index, KEYS, max_held=max_held)  # pylint: disable=protected-access
  for slot, entry in ((7, 1), (8, 0)):
    parts = read(tf.constant(slot, tf.int64), tf.constant(entry, tf.int64))
    frames = parts.take(tf.concat([parts.frames(dmvr_format.IMAGE_KEY, [3, 1]),
                                   parts.frames(dmvr_format.FLOW_KEY, [0])], 0)).numpy()
    expected = _tf_parse(records[entry])
    assert list(frames) == [expected['video'][3], expected['video'][1], expected['flow'][0]]


def test_eval_and_finetune_clips_get_the_frames_a_whole_parse_gives():
  """The linear probe's train passes and fine-tuning read a window of frames on demand; the
  frames, labels and waveform equal those of the whole record parsed (the path TFDS takes)."""
  from brave_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  record = _clip_record(6)
  whole = pipeline._parsed_with_frames(  # pylint: disable=protected-access
      tf.constant(record), reader.parse_example, True)
  on_demand = pipeline._parsed_with_frames(  # pylint: disable=protected-access
      reader.frames_on_demand(tf.constant(record), KEYS), reader.parse_example, True)
  positions = tf.constant([5, 0, 2, 2], tf.int64)
  assert int(whole[1]) == int(on_demand[1]) == 6
  ours, theirs = on_demand[2](positions), whole[2](positions)
  assert ours.shape == theirs.shape == (4,)  # Static length, as the batching needs.
  assert list(ours.numpy()) == list(theirs.numpy())
  assert list(ours.numpy()) != list(whole[2](tf.constant([4, 0, 2, 2], tf.int64)).numpy())
  assert int(on_demand[0]['label']) == int(whole[0]['label']) == 3
  np.testing.assert_array_equal(on_demand[0]['audio'].numpy(), whole[0]['audio'].numpy())
