"""brave_jax: BraVe self-supervised video learning in JAX/Haiku."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements() -> list[str]:
  lines = (_HERE / 'requirements.txt').read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith('#')]


setuptools.setup(
    name='brave_jax',
    version='0.1.0',
    description='BraVe: Broaden Your Views for Self-Supervised Video Learning, in JAX/Haiku.',
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['brave_jax', 'brave_jax.*']),
    python_requires='>=3.10',
    install_requires=_requirements(),
    # `python -m brave_jax.plan` compiles the training step for a Cloud TPU topology on any
    # machine; it needs libtpu, which is large and changes JAX's backend search, so it is
    # optional (install it in its own virtualenv): pip install -e '.[tpu-plan]'.
    extras_require={'tpu-plan': ['jax[tpu]==0.10.2']},
)
