"""brave_jax: BraVe self-supervised video learning in JAX/Haiku.

install_requires declares the ranges brave_jax works with, so it can be installed
beside other packages; requirements.txt is the exact set of versions tested
together, which the README's commands and CI install (`pip install -r
requirements.txt -e .`).
"""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent

# Compatible release ranges (~=X.Y.Z: >= X.Y.Z, < X.(Y+1)) around the tested lock in
# requirements.txt. JAX, Haiku, optax, Orbax and TensorFlow change behaviour between minor
# releases (the fidelity tests hold numbers to 1e-7), so their ranges stay within one minor.
_REQUIRES = [
    'jax~=0.10.2',
    'jaxlib~=0.10.2',
    'dm-haiku~=0.0.17',
    'optax~=0.2.8',
    'chex~=0.1.92',
    'jmp~=0.0.4',
    'tensorflow-cpu~=2.21.0',
    'tensorflow-datasets~=4.9',
    'ml-collections~=1.1',
    'orbax-checkpoint~=0.12.8',
    'scikit-learn~=1.9',
    'av>=14,<19',
    'opencv-contrib-python-headless>=4.9,<6',
    'matplotlib~=3.9',
    'pillow>=10.2',  # Flow JPEGs need keep_rgb.
    'tqdm~=4.66',
    'tensorboardX~=2.6',
    'numpy>=2.0,<3',
    'crc32c>=2.4',  # TFRecord CRCs when reading records by offset.
]

setuptools.setup(
    name='brave_jax',
    version='0.1.0',
    description='BraVe: Broaden Your Views for Self-Supervised Video Learning, in JAX/Haiku.',
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['brave_jax', 'brave_jax.*']),
    python_requires='>=3.10',
    install_requires=_REQUIRES,
    extras_require={
        'test': ['pytest>=8'],
        # `python -m brave_jax.plan` compiles the training step for a Cloud TPU topology on any
        # machine; it needs libtpu, which is large and changes JAX's backend search, so it is
        # optional (install it in its own virtualenv): pip install -e '.[tpu-plan]'.
        'tpu-plan': ['jax[tpu]~=0.10.2'],
    },
)
