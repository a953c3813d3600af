"""Published checkpoints give the published embeddings (tests/testdata/published_forward.npz).

The golden features were computed by the published BraVe code for full-size V/A
and V/V checkpoints whose every array follows a rule of its path and shape
(restated in tests/published_checkpoints.py). Here the
same checkpoints are rebuilt from the published parameter manifest and that
rule alone (nothing from our model's init defines them), written in the
published `.npy` format, loaded with `published.load`, and embedded.
"""
import time

import numpy as np
import pytest

from brave_jax import published
from published_checkpoints import published_checkpoint
from published_checkpoints import relative_max_error as _relative_max_error

MAX_RELATIVE_ERROR = 1e-4


@pytest.mark.parametrize('setup', ['rgb_audio', 'rgb_rgb'])
def test_published_checkpoint_gives_the_published_embeddings(setup, testdata_dir, tmp_path):
  started = time.perf_counter()
  golden = np.load(testdata_dir / 'published_forward.npz')
  path = published.save(str(tmp_path / f'brave_{setup}.npy'), *published_checkpoint(setup))
  m = published.load(path)
  errors = {}
  if setup == 'rgb_audio':
    errors['va_narrow_feats'] = _relative_max_error(m.embed_video(golden['narrow_video']),
                                                    golden['va_narrow_feats'])
    errors['va_broad_audio_feats'] = _relative_max_error(m.embed_audio(golden['broad_audio']),
                                                         golden['va_broad_audio_feats'])
  else:
    errors['vv_narrow_feats'] = _relative_max_error(m.embed_video(golden['narrow_video']),
                                                    golden['vv_narrow_feats'])
    errors['vv_broad_video_feats'] = _relative_max_error(
        m.embed_broad('video', golden['broad_video']), golden['vv_broad_video_feats'])
  print(f'{setup}: relative max errors {errors} ({time.perf_counter() - started:.1f} s)')
  for key, error in errors.items():
    assert error < MAX_RELATIVE_ERROR, (key, error)
