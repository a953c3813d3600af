"""The one config schema every `configs/*.py` file starts from, and its validation.

Config files stay short by starting from `base_config()` (the published BraVe
defaults, docs/design.md) and changing only what their view setup needs; their
`:tiny` and `:demo` variants are written in each file (shared pieces: cpu_variants).
`validate` runs once, before anything compiles, so a typo in a 300k-step run
fails in a second, naming the field.
"""
from __future__ import annotations

import os
from typing import Sequence

import ml_collections

from brave_jax import errors

BROAD_MODALITIES = ('video', 'rc', 'flow', 'audio')
"""Broad-view modalities; each gets its own backbone.

video: RGB frames (randomly convolved when data.random_convolve_broad_video).
rc:    randomly convolved RGB frames as a modality of its own.
flow:  optical flow, 2 channels in [-1, 1].
audio: log-mel spectrogram of the mono waveform.
"""
BROAD_STARTS = ('at_narrow', 'uniform_after_narrow')  # See config.data.broad_start.
JPEG_DECODES = ('full', 'full_frame', 'reduced_scale')  # See config.data.jpeg_decode.
RESIZE_ON = ('host', 'device')  # See config.data.narrow.resize_on.
AUGMENT_ON = ('host', 'device')  # See config.data.augment_on.
SHIPPED_FRAMES_DTYPES = ('float32', 'uint8')  # See config.data.shipped_frames_dtype.
TSM_DEPTHS = (18, 34, 50, 101, 152, 200)
AUDIO_DEPTHS = (18, 34, 50, 101, 152, 200)
AUDIO_BASIC_BLOCKS = ('published', 'two_3x3')  # See config.model.audio_backbone.basic_block.
OPTIMIZERS = ('lars', 'adamw')
SYNTHETIC_GENERATORS = ('embedded', 'independent')  # See config.data.synthetic.generator.
INDEPENDENT_FPS = 12  # Frame rate and audio rate of data/synthetic_independent.py (its Spec).
INDEPENDENT_AUDIO_RATE = 16000
OPTIMIZER_VARIANTS = ('published', 'corrected')  # See config.optimizer.variant.
COMPUTE_DTYPES = ('float32', 'bfloat16')
BN_BACKWARDS = ('analytic', 'autodiff')  # model.bn_backward (models/tsm_resnet.BatchNorm).
FINETUNE_OPTIMIZERS = ('sgd', 'adamw')
FEATURE_TRANSFORMS = ('standardize', 'l2_standardize', 'auto')  # config.eval.feature_transform.


class ConfigError(errors.UsageError):
  """A config field holds a value the run cannot use (a ValueError; the CLIs print it as one line)."""


def base_config() -> ml_collections.ConfigDict:
  """The published V/A defaults; view-specific files override what differs."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds init, data order and augmentation (per process: seed + process_index).

  # Data
  c.data = ml_collections.ConfigDict()
  c.data.train_shards = ''  # DMVR shards: glob, directory or comma list; '' = embedded synthetic set.
  c.data.test_shards = ''  # Labelled shards for linear evaluation; '' = embedded synthetic test split.
  c.data.video_fps = 25  # Frame rate the shards were written at.
  c.data.audio_sample_rate = 48000  # Waveform sample rate in the shards (Hz).
  c.data.narrow = ml_collections.ConfigDict(dict(
      num_frames=16,  # Frames in the narrow clip.
      frame_step=2,  # Stride between sampled frames.
      image_size=224,  # Square crop side in pixels.
      # With data.augment_on='device': where the pretraining crop is resized to image_size.
      # 'device' = the host ships the decoded crop as uint8 and the training step
      # resizes it with tf.image.resize's arithmetic (data/resize_device.py: equal to float
      # rounding, 1.7x fewer bytes than the resized float32 view, no resize on the host);
      # 'host' = the host resizes and ships as data.shipped_frames_dtype says. Not changeable
      # on resume.
      resize_on='device',
      # With resize_on='device': pixels of the buffer each frame's crop travels in, at least the
      # largest frame height x width of the data (a crop is at most its frame). 256 x 456: any
      # frame with a 256-px short side up to 16:9. A larger crop fails its record, naming this.
      crop_buffer_pixels=256 * 456,
  ))
  c.data.broad = ml_collections.ConfigDict(dict(
      num_frames=64,
      frame_step=4,
      image_size=112,
  ))
  c.data.broad_modalities = ('audio',)  # Subset of BROAD_MODALITIES, each with its own backbone.
  # Where the broad window starts, given the narrow clip's start s (uniform over the video; the
  # video and its audio loop to s + num_frames * frame_step broad frames): 'at_narrow' = at s
  # (published, docs/design.md "Views and the sampler"); 'uniform_after_narrow' = uniform from
  # s to the last start whose num_frames * frame_step frames (and audio) fit the looped video
  # (an option: a broad window that need not begin with the narrow clip).
  c.data.broad_start = 'at_narrow'
  c.data.random_convolve_broad_video = False  # Randomly convolve the broad 'video' view (V/V).
  # How training crops (RGB and flow views, linear-probe train clips) are decoded:
  # 'full' = the published pixels (every sampled frame decoded at full scale, cropped, resized
  # bilinearly), libjpeg decoding only a window a little wider than the crop, which gives the
  # same pixels; 'full_frame' = the published ops themselves (whole frame, then the crop);
  # 'reduced_scale' = ours, libjpeg decodes only the crop and, when the view is smaller, at
  # 1/2-1/8 scale (faster, not the published pixels). data/decode.py says why.
  c.data.jpeg_decode = 'full'
  c.data.audio = ml_collections.ConfigDict(dict(
      num_mel_bins=80,  # Mel bins of the log-mel spectrogram.
      frame_length=320,  # STFT window length (samples).
      fft_length=320,
      frame_step=160,  # STFT hop (samples).
      lower_edge_hz=80.0,
      upper_edge_hz=7600.0,
  ))
  c.data.augment = ml_collections.ConfigDict(dict(
      crop_area_range=(0.3, 1.0),  # Random-resized-crop area fraction.
      crop_aspect_range=(0.5, 2.0),  # Random-resized-crop aspect ratio (w/h).
      blur_prob=1.0,  # Probability of Gaussian blur (kernel = size/10).
      blur_sigma_range=(0.1, 2.0),
      flip_prob=0.5,  # Horizontal flip probability.
      color_jitter_prob=0.8,
      brightness=32.0 / 255.0,
      saturation_range=(0.6, 1.4),
      contrast_range=(0.6, 1.4),
      hue=0.2,
      grayscale_prob=0.2,
      rc_kernel_sizes=(1, 3, 5, 7, 9, 11),  # Odd kernel sizes for random convolution.
  ))
  # Where the RGB views' blur, flip, colour jitter, greyscale and random convolution run:
  # 'host' = in the tf.data pipeline; 'device' = inside the jitted training (and fine-tuning)
  # step (data/augment_device.py), the host shipping the cropped, resized frames and each clip's
  # draws from the same seeds, and the broad audio as its waveform (the pretraining step makes
  # the log-mel, data/spectrogram_device.py). Equal to float rounding (docs/data.md). Not
  # changeable on resume.
  # 'device' by default: on an accelerator the chain costs ~0.4-2 GFLOP per clip beside the
  # step's ~500, while on the host it is most of the input pipeline's CPU (bench/README.md,
  # issue 18). The CPU recipes (:tiny, :demo; cpu_variants.py) choose 'host'.
  c.data.augment_on = 'device'
  # With augment_on='device', the frames shipped to the device: 'float32' = the crop+resize
  # output as is (device results equal the host's to float rounding); 'uint8' = rounded, 4x
  # fewer bytes, each pixel within 0.5/255 of it before augmentation.
  c.data.shipped_frames_dtype = 'float32'
  # Training order: each epoch is a seeded permutation of every record of this host's shards
  # (data/pipeline.py), so the batch of a step is a pure function of (seed, hosts, step).
  # Bad-data budget: stop with an error naming the shards once more than this fraction of the
  # records read failed (CRC, parse, JPEG decode, missing audio/flow; counted over at least 100) ...
  c.data.max_bad_record_fraction = 0.1
  c.data.max_consecutive_bad_records = 50  # ... or more than this many failed in a row.
  c.data.num_parallel_calls = -1  # tf.data parallelism; -1 = AUTOTUNE.
  c.data.prefetch = 2  # Batches prefetched by tf.data.
  # Threads each TF op may use. Parallelism comes from decoding many clips at
  # once; op-level threads on top only contend (1 gave 1.03-1.09x the clips/s of TF's
  # default on 2 cores, bench/input_pipeline.py). 0 = TF's default.
  c.data.tf_intra_op_threads = 1
  c.data.synthetic = ml_collections.ConfigDict(dict(
      cache_dir='~/.cache/brave_jax/synthetic',  # Where the embedded dataset is written once.
      num_classes=10,
      train_videos_per_class=24,
      test_videos_per_class=8,
      seconds=2.8,  # Length of each generated video (covers the demo's 64-frame broad window).
      height=64,  # Stored frame size.
      width=80,
      seed=0,  # The dataset is a pure function of this seed and the fields above.
      # 'embedded': the dataset above (data/synthetic.py). 'independent': a second dataset written
      # apart from the first (data/synthetic_independent.py; fixed sizes, only seed and cache_dir
      # read; needs data.video_fps=12, data.audio_sample_rate=16000): bench/generalisation.py
      # checks that a recipe tuned on the first also learns there.
      generator='embedded',
  ))

  # Model
  c.model = ml_collections.ConfigDict()
  c.model.narrow_backbone = ml_collections.ConfigDict(dict(
      depth=50,  # TSM-ResNet-v2 depth.
      width_multiplier=1.0,  # Channel multiplier (1 or 2 in the paper; <1 for CPU variants).
  ))
  c.model.broad_video_backbone = ml_collections.ConfigDict(dict(
      depth=50,  # Used by every video-like broad modality (video, rc, flow).
      width_multiplier=1.0,
  ))
  c.model.audio_backbone = ml_collections.ConfigDict(dict(
      depth=50,  # ResNet-v2 depth for the spectrogram.
      width_multiplier=1.0,
      # Depth 18/34 blocks (used by :tiny/:demo): 'published' = as the published resnet.py,
      # bn-relu-1x1 conv, then bn-relu-3x3 conv with the block's stride; 'two_3x3' = the usual
      # basic block (3x3 with the stride, then 3x3). Depth >= 50 (bottleneck) ignores it.
      basic_block='published',
  ))
  c.model.projection_dim = 128  # d: output of projector and predictor.
  c.model.hidden_dim = 4096  # Hidden width of projector and predictor MLPs.
  c.model.shared_head = True  # One projector+predictor for every view (published code).
  c.model.bn_decay = 0.9
  c.model.bn_eps = 1e-5
  c.model.compute_dtype = 'float32'  # 'bfloat16': bf16 compute, f32 params/BN stats/loss.
  c.model.remat = False  # Rematerialise backbone blocks to save memory.
  # Backbone batch norm's gradient in a training step: 'analytic' (ours: written out, the
  # same function to float rounding, fewer reductions: models/batch_norm_grad.py) or
  # 'autodiff' (as published: autodiff of hk.BatchNorm).
  c.model.bn_backward = 'analytic'

  # Optimizer
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'lars'  # 'lars' or 'adamw'.
  # Peak LR at global batch 512, scaled linearly with the batch (peak_learning_rate). Our choice:
  # the published code keeps peak 1.0 at any batch; the two agree at its batch of 512.
  c.optimizer.base_learning_rate = 1.0
  c.optimizer.warmup_steps = 5000
  c.optimizer.end_learning_rate = 0.0  # Cosine decays to this at the last step.
  # 'published': as the published code (and its models): predictor x10 on the gradients before
  # LARS/AdamW, weight decay and trust ratio ONLY on biases and norm parameters (conv/linear
  # weights: momentum SGD, no decay). 'corrected': x10 on the final updates, decay and trust
  # ratio on the weights, not on biases/norms. docs/fidelity.md compares them.
  c.optimizer.variant = 'published'
  c.optimizer.weight_decay = 1e-2  # Applied where optimizer.variant says.
  c.optimizer.momentum = 0.9  # LARS momentum.
  c.optimizer.trust_coefficient = 1e-3  # LARS trust ratio coefficient.
  c.optimizer.nesterov = True
  c.optimizer.adam_b1 = 0.9
  c.optimizer.adam_b2 = 0.999
  c.optimizer.adam_eps = 1e-8
  # (regex matched from the start of the parameter path 'module/name', multiplier); the
  # multipliers of all matching rules multiply (published). Where they apply: optimizer.variant.
  c.optimizer.lr_multipliers = (('.*predictor.*', 10.0),)

  # Training
  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 512  # Global batch over all processes and devices.
  c.training.num_steps = 300_000
  c.training.log_every = 50  # Steps between metric writes.
  c.training.checkpoint_every = 2000  # Steps between checkpoints (one is also written at the end).
  c.training.keep_checkpoints = 3  # Most recent checkpoints kept on disk.
  c.training.plot_every = 0  # Steps between loss.png refreshes (0 = at the end only).

  # Eval (linear protocol, docs/design.md "Linear evaluation")
  c.eval = ml_collections.ConfigDict()
  c.eval.run_after_training = False  # Evaluate the trained model when training ends:
  c.eval.protocols = ('linear',)  # with these protocols (brave_jax/eval/<name>.py), in order.
  c.eval.compare_random_init = False  # Also evaluate a randomly initialised backbone.
  c.eval.num_frames = 32
  c.eval.frame_step = 2
  c.eval.image_size = 224
  c.eval.resize_short_side = 256  # Test frames are resized so the short side is this.
  c.eval.num_temporal_crops = 10
  c.eval.num_spatial_crops = 3
  c.eval.train_passes = 10  # Augmented passes over the train split.
  # LinearSVC C, or 'auto' to cross-validate it on the train split only.
  c.eval.svm_c = ml_collections.FieldReference(1e-4, field_type=object)
  # With svm_c='auto', what a validation fold scores: 'video' (each held-out video by its clips'
  # mean decision score, as the test split is scored) or 'clip' (each augmented clip alone; before
  # issue 23, and close to flat in C). Unused with a numeric C (the published 1e-4).
  c.eval.svm_c_cv_unit = 'video'
  c.eval.batch_size = 8  # Clips per forward pass when embedding.
  # What the SVM sees: 'standardize' (published: per-feature zero mean, unit variance, fit on the
  # train split), 'l2_standardize' (each embedding divided by its L2 norm first; eval/svm.py) or
  # 'auto' (the one of the two that the train-split CV prefers, chosen with C; the :demo's).
  c.eval.feature_transform = 'standardize'
  # After training, also write <workdir>/embeddings_<pretrained|random_init>.npz, so the probe can
  # be re-fit without the model (python -m brave_jax.evaluate --embeddings=...).
  c.eval.save_embeddings = False

  # Fine-tuning (python -m brave_jax.evaluate --protocol=finetune): the narrow backbone, dropout
  # and a linear head trained end to end on labelled clips (config.eval's clip, made as the
  # linear protocol's train clips), tested with the linear protocol's multi-crop.
  c.finetune = ml_collections.ConfigDict()
  c.finetune.optimizer = 'sgd'  # 'sgd' (momentum) or 'adamw'.
  c.finetune.batch_size = 64  # Global batch over all processes and devices.
  c.finetune.num_steps = 8_000  # ~54 epochs of UCF101 split 1 (9,537 videos) at batch 64.
  c.finetune.warmup_steps = 400  # Linear warm-up from 0, then cosine to 0 at num_steps.
  c.finetune.base_learning_rate = 0.1  # Peak LR at global batch 64; scaled linearly with batch.
  c.finetune.backbone_lr_multiplier = 1.0  # Backbone LR = this x the head's (e.g. 0.1: gentler).
  c.finetune.momentum = 0.9  # SGD momentum.
  c.finetune.nesterov = True
  c.finetune.weight_decay = 1e-4  # Not applied to biases and normalisation parameters.
  c.finetune.dropout_rate = 0.5  # Dropout on the backbone features, before the head.
  c.finetune.log_every = 50
  c.finetune.checkpoint_every = 1000  # Checkpoints go to <output_dir>/checkpoints; a rerun resumes.
  c.finetune.keep_checkpoints = 2

  # Audio evaluation (--protocol=audio): the broad audio backbone's frozen embeddings.
  c.audio_eval = ml_collections.ConfigDict()
  c.audio_eval.num_windows = 1  # Log-mel windows per clip, evenly spaced, embeddings averaged.
  c.audio_eval.batch_size = 16  # Windows per forward pass.
  c.audio_eval.head = 'linear'  # Multi-label (AudioSet style) head: 'linear' or 'mlp'.
  c.audio_eval.hidden_dim = 512  # MLP head width.
  c.audio_eval.learning_rate = 1e-3  # Adam, on standardised embeddings, sigmoid cross-entropy.
  c.audio_eval.weight_decay = 1e-4
  c.audio_eval.epochs = 100
  c.audio_eval.head_batch_size = 256
  # The embedded ESC-style audio split (used when no audio shards are given): the synthetic
  # classes' sounds, fresh draws, `clips_per_fold` per class in each of `num_folds` folds, with
  # background noise at an SNR drawn from `snr_db` (() = none). One clip per fold leaves each
  # fold's classifier 4 labelled clips per class: with 8 clean ones any features separate the
  # 10 tones (bench/README.md, "Evaluation protocols on the embedded dataset").
  c.audio_eval.synthetic = ml_collections.ConfigDict(dict(
      num_folds=5, clips_per_fold=1, seconds=1.0, snr_db=(0.0, 10.0)))

  # Online kNN monitor of pretraining: every `every_steps` updates, embed a small labelled set
  # with the narrow backbone and log leave-one-out kNN top-1 (metrics.jsonl, TensorBoard, the
  # progress line, knn.png). Neighbours are weighted by exp(cosine similarity / temperature).
  c.knn_monitor = ml_collections.ConfigDict()
  c.knn_monitor.every_steps = 0  # 0 = off.
  c.knn_monitor.shards = ''  # Labelled shards; '' = data.test_shards, else the embedded test split.
  c.knn_monitor.max_videos = 1000  # At most this many videos (the first in shard order).
  c.knn_monitor.k = 20
  c.knn_monitor.temperature = 0.07

  # Audio<->video retrieval (--protocol=retrieval, eval/retrieval.py): each test clip's narrow
  # video clip (data.narrow's frames, step and size, after config.eval's short-side resize) and
  # the broad audio window from the same start, scored in the space where the views predict
  # each other: cos(h_narrow, z_audio) + cos(h_audio, z_narrow).
  c.retrieval = ml_collections.ConfigDict()
  c.retrieval.num_temporal_crops = 1  # Windows per clip (evenly spaced; vectors averaged).
  c.retrieval.num_spatial_crops = 3  # Crops on the diagonal per window (published test crops).
  c.retrieval.batch_size = 16  # Crops per forward pass.
  c.retrieval.compare_random_init = True  # Also rank with a random-init model (BN re-estimated).
  c.retrieval.max_clips = 0  # Rank at most this many clips (the first in shard order); 0 = all.
  c.retrieval.plot_queries = 4  # Queries drawn per direction in retrieval.png ...
  c.retrieval.plot_top = 5  # ... each with its top matches.
  return c


def uneven_batch(batch_size: int, num_processes: int, num_local_devices: int) -> str | None:
  """Why a global batch cannot be split over processes x local devices, or None when it can.

  The one divisibility rule for every batch (training, fine-tuning, the data
  pipelines, the plan's chips); callers put their own field's name in front of
  the reason, so each error names the setting to change.
  """
  shards = num_processes * num_local_devices
  if batch_size % shards:
    return (f'does not split evenly over {num_processes} process(es) x {num_local_devices} '
            f'device(s); use a multiple of {shards}')
  return None


def _require(condition: bool, field: str, message: str) -> None:
  if not condition:
    raise ConfigError(f'config.{field}: {message}')


def _positive_int(config: ml_collections.ConfigDict, field: str) -> None:
  value = config
  for part in field.split('.'):
    value = value[part]
  _require(isinstance(value, int) and value > 0, field, f'must be a positive integer, got {value!r}')


def augments_on_device(config: ml_collections.ConfigDict) -> bool:
  """True when config.data.augment_on is 'device'; raises ConfigError naming the field when it,
  or config.data.shipped_frames_dtype, is not one of its values."""
  d = config.data
  _require(d.augment_on in AUGMENT_ON, 'data.augment_on',
           f'must be one of {AUGMENT_ON} (where the view augmentations run), got '
           f'{d.augment_on!r}')
  _require(d.shipped_frames_dtype in SHIPPED_FRAMES_DTYPES, 'data.shipped_frames_dtype',
           f'must be one of {SHIPPED_FRAMES_DTYPES}, got {d.shipped_frames_dtype!r}')
  return d.augment_on == 'device'


def resizes_narrow_on_device(config: ml_collections.ConfigDict) -> bool:
  """True when the pretraining pipeline ships the narrow view's crop for the step to resize
  (data.narrow.resize_on='device' with augment_on='device'); ConfigError naming the field when
  it is not one of RESIZE_ON or the crop buffer is not a positive size."""
  n = config.data.narrow
  _require(n.resize_on in RESIZE_ON, 'data.narrow.resize_on',
           f'must be one of {RESIZE_ON}, got {n.resize_on!r}')
  if not augments_on_device(config) or n.resize_on != 'device':
    return False
  _positive_int(config, 'data.narrow.crop_buffer_pixels')
  return True


def validate(config: ml_collections.ConfigDict, num_processes: int = 1,
             num_local_devices: int = 1) -> None:
  """Raises ConfigError naming the first field the run cannot use."""
  modalities: Sequence[str] = tuple(config.data.broad_modalities)
  _require(len(modalities) > 0, 'data.broad_modalities', 'needs at least one broad modality')
  for m in modalities:
    _require(m in BROAD_MODALITIES, 'data.broad_modalities',
             f'unknown modality {m!r}; choose from {BROAD_MODALITIES}')
  _require(len(set(modalities)) == len(modalities), 'data.broad_modalities',
           f'lists a modality twice: {modalities}')
  _require(config.data.broad_start in BROAD_STARTS, 'data.broad_start',
           f'must be one of {BROAD_STARTS}, got {config.data.broad_start!r}')
  _require(config.data.jpeg_decode in JPEG_DECODES, 'data.jpeg_decode',
           f'must be one of {JPEG_DECODES}, got {config.data.jpeg_decode!r}')
  for view in ('narrow', 'broad'):
    for f in ('num_frames', 'frame_step', 'image_size'):
      _positive_int(config, f'data.{view}.{f}')
  generator = config.data.synthetic.get('generator', 'embedded')
  _require(generator in SYNTHETIC_GENERATORS, 'data.synthetic.generator',
           f'must be one of {SYNTHETIC_GENERATORS}, got {generator!r}')
  if generator == 'independent' and not config.data.train_shards:
    for field, value in (('video_fps', INDEPENDENT_FPS), ('audio_sample_rate', INDEPENDENT_AUDIO_RATE)):
      _require(config.data[field] == value, f'data.{field}',
               f"the 'independent' synthetic dataset is written at {value}; set "
               f'--config.data.{field}={value} (got {config.data[field]})')
  for f in ('video_fps', 'audio_sample_rate'):
    _positive_int(config, f'data.{f}')
  broad_span = config.data.broad.num_frames * config.data.broad.frame_step
  # Two stride-2 stages (stem conv, max pool) + three strided units: 32x total.
  for view in ('narrow', 'broad'):
    _require(config.data[view].image_size >= 32, f'data.{view}.image_size',
             f'must be at least 32 px (the backbone downsamples 32x), got {config.data[view].image_size}')
  if 'audio' in modalities:
    a = config.data.audio
    for f in ('num_mel_bins', 'frame_length', 'fft_length', 'frame_step'):
      _positive_int(config, f'data.audio.{f}')
    _require(a.fft_length >= a.frame_length, 'data.audio.fft_length', 'must be >= frame_length')
    _require(0 <= a.lower_edge_hz < a.upper_edge_hz <= config.data.audio_sample_rate / 2,
             'data.audio.upper_edge_hz',
             f'need 0 <= lower_edge_hz < upper_edge_hz <= sample_rate/2, got '
             f'{a.lower_edge_hz}, {a.upper_edge_hz}, rate {config.data.audio_sample_rate}')
    seconds = broad_span / config.data.video_fps
    num_spec_frames = int(seconds * config.data.audio_sample_rate) // a.frame_step
    _require(num_spec_frames >= 32, 'data.broad',
             f'broad window of {seconds:.2f} s gives {num_spec_frames} spectrogram frames; '
             'the audio backbone needs at least 32')
  for name in ('narrow_backbone', 'broad_video_backbone', 'audio_backbone'):
    depths = AUDIO_DEPTHS if name == 'audio_backbone' else TSM_DEPTHS
    _require(config.model[name].depth in depths, f'model.{name}.depth',
             f'must be one of {depths}, got {config.model[name].depth}')
    width = config.model[name].width_multiplier
    _require(0 < width <= 4 and (width < 1 or float(width).is_integer()),
             f'model.{name}.width_multiplier',
             f'must be in (0, 1) or a whole number from 1 to 4, got {width}')
  _require(config.model.audio_backbone.basic_block in AUDIO_BASIC_BLOCKS,
           'model.audio_backbone.basic_block',
           f'must be one of {AUDIO_BASIC_BLOCKS}, got {config.model.audio_backbone.basic_block!r}')
  for f in ('projection_dim', 'hidden_dim'):
    _positive_int(config, f'model.{f}')
  _require(config.model.compute_dtype in COMPUTE_DTYPES, 'model.compute_dtype',
           f'must be one of {COMPUTE_DTYPES}, got {config.model.compute_dtype!r}')
  _require(config.model.get('bn_backward', 'analytic') in BN_BACKWARDS, 'model.bn_backward',
           f'must be one of {BN_BACKWARDS}, got {config.model.get("bn_backward")!r}')
  _require(config.optimizer.name in OPTIMIZERS, 'optimizer.name',
           f'must be one of {OPTIMIZERS}, got {config.optimizer.name!r}')
  _require(config.optimizer.variant in OPTIMIZER_VARIANTS, 'optimizer.variant',
           f'must be one of {OPTIMIZER_VARIANTS}, got {config.optimizer.variant!r}')
  resizes_narrow_on_device(config)  # Checks data.augment_on and data.shipped_frames_dtype too.
  for k in config.data.augment.rc_kernel_sizes:
    _require(isinstance(k, int) and k > 0 and k % 2 == 1, 'data.augment.rc_kernel_sizes',
             f'kernel sizes must be odd positive integers, got {k!r}')
  fraction = config.data.max_bad_record_fraction
  _require(isinstance(fraction, (int, float)) and 0 <= fraction <= 1, 'data.max_bad_record_fraction',
           f'must be a number in [0, 1] (0: stop at the first bad record, 1: never stop for the '
           f'fraction), got {fraction!r}')
  run = config.data.max_consecutive_bad_records
  _require(isinstance(run, int) and not isinstance(run, bool) and run >= 0,
           'data.max_consecutive_bad_records',
           f'must be an integer >= 0 (bad records allowed in a row), got {run!r}')
  threads = config.data.tf_intra_op_threads
  _require(isinstance(threads, int) and threads >= 0, 'data.tf_intra_op_threads',
           f"must be 0 (TF's default) or a positive integer, got {threads!r}")
  for f in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
    _positive_int(config, f'training.{f}')
  _require(0 <= config.optimizer.warmup_steps <= config.training.num_steps, 'optimizer.warmup_steps',
           f'must be between 0 and training.num_steps ({config.training.num_steps}), '
           f'got {config.optimizer.warmup_steps}')
  uneven = uneven_batch(config.training.batch_size, num_processes, num_local_devices)
  _require(uneven is None, 'training.batch_size',
           f'global batch {config.training.batch_size} {uneven}')
  _require(config.eval.get('feature_transform', 'standardize') in FEATURE_TRANSFORMS,
           'eval.feature_transform',
           f"must be one of {FEATURE_TRANSFORMS}, got {config.eval.get('feature_transform')!r}")
  _require(config.eval.get('svm_c_cv_unit', 'video') in ('video', 'clip'), 'eval.svm_c_cv_unit',
           f"must be 'video' or 'clip', got {config.eval.get('svm_c_cv_unit')!r}")
  from brave_jax.eval import protocols  # pylint: disable=g-import-not-at-top
  unknown = [p for p in config.eval.get('protocols', ()) if p not in protocols.NAMES]
  _require(not unknown, 'eval.protocols',
           f'unknown protocol(s) {unknown}; the protocols are {", ".join(protocols.NAMES)}')
  svm_c = config.eval.svm_c
  _require(svm_c == 'auto' or (isinstance(svm_c, (int, float)) and svm_c > 0), 'eval.svm_c',
           f"must be a positive number or 'auto', got {svm_c!r}")
  if 'finetune' in config:
    f = config.finetune
    _require(f.optimizer in FINETUNE_OPTIMIZERS, 'finetune.optimizer',
             f'must be one of {FINETUNE_OPTIMIZERS}, got {f.optimizer!r}')
    for name in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
      _positive_int(config, f'finetune.{name}')
    _require(0 <= f.warmup_steps <= f.num_steps, 'finetune.warmup_steps',
             f'must be between 0 and finetune.num_steps ({f.num_steps}), got {f.warmup_steps}')
    _require(0 <= f.dropout_rate < 1, 'finetune.dropout_rate',
             f'must be in [0, 1), got {f.dropout_rate}')
    _require(f.base_learning_rate > 0 and f.backbone_lr_multiplier >= 0,
             'finetune.base_learning_rate',
             'and finetune.backbone_lr_multiplier must be positive (the multiplier may be 0: '
             'a frozen backbone)')
  if 'audio_eval' in config:
    _positive_int(config, 'audio_eval.num_windows')
    _positive_int(config, 'audio_eval.batch_size')
    _require(config.audio_eval.head in ('linear', 'mlp'), 'audio_eval.head',
             f"must be 'linear' or 'mlp', got {config.audio_eval.head!r}")
    a = config.audio_eval.synthetic
    _require(isinstance(a.num_folds, int) and a.num_folds >= 2, 'audio_eval.synthetic.num_folds',
             f'must be an integer >= 2, got {a.num_folds!r}')
    _positive_int(config, 'audio_eval.synthetic.clips_per_fold')
    _require(len(a.snr_db) in (0, 2) and (not a.snr_db or a.snr_db[0] <= a.snr_db[1]),
             'audio_eval.synthetic.snr_db', f'must be () or (low, high) in dB, got {a.snr_db!r}')
  if 'knn_monitor' in config:
    k = config.knn_monitor
    _require(isinstance(k.every_steps, int) and k.every_steps >= 0, 'knn_monitor.every_steps',
             f'must be 0 (off) or a positive number of steps, got {k.every_steps!r}')
    _positive_int(config, 'knn_monitor.k')
    _positive_int(config, 'knn_monitor.max_videos')
    _require(k.temperature > 0, 'knn_monitor.temperature', f'must be > 0, got {k.temperature}')
  if 'retrieval' in config:
    for f in ('num_temporal_crops', 'num_spatial_crops', 'batch_size', 'plot_top'):
      _positive_int(config, f'retrieval.{f}')
    for f in ('max_clips', 'plot_queries'):
      _require(isinstance(config.retrieval[f], int) and config.retrieval[f] >= 0, f'retrieval.{f}',
               f'must be an integer >= 0, got {config.retrieval[f]!r}')


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """base_learning_rate * batch / 512: our linear scaling rule, not the published code's.

  The published trainer uses peak 1.0 whatever the batch; at its global batch
  of 512 the two are equal. Scaling keeps smaller (CPU, few-chip) batches stable.
  """
  return config.optimizer.base_learning_rate * config.training.batch_size / 512


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:variant]' as `--config=` does, for scripts, benches and tests."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} not found (from {spec!r})')
  module_spec = importlib.util.spec_from_file_location('brave_config_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)
