"""Command-line plumbing shared by the entry points: config flags whose errors are one line.

absl and ml_collections report a missing --config file, an unknown
--config.* field or a bad value after a Python traceback (or lazily, when the
config is first read). `config_flags_parser` reports each as one line,
`error: ...`, exit status 2, before the program starts, and validates the
config (process and device counts aside) so a typo fails in a second.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from absl import flags

from brave_jax import config_base
from brave_jax import errors


def flag_value(argv: Sequence[str], name: str) -> str | None:
  """The last --name=value / --name value in argv (before absl parses it)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg.split('=', 1)[1]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def explain_flag_error(error: BaseException, argv: Sequence[str]) -> str:
  """One line for what went wrong applying --config.* overrides (unknown field, bad value)."""
  lookup = isinstance(error, (KeyError, AttributeError))
  text = str(error.args[0]) if lookup and error.args else str(error)
  missing = re.match(r"""^['"]?\\?'?([A-Za-z_0-9]+)""", text.strip())
  if lookup and missing:
    key = missing.group(1)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    overrides = [a.split('=', 1)[0] for a in argv if a.startswith('--config.')]
    flag = next((o for o in overrides if key in o[len('--config.'):].split('.')),
                f'--config.*{key}*')
    return (f'{flag}: the config has no field {flag[len("--config."):]!r}'
            f'{f" (did you mean {hint.group(1)!r}?)" if hint else ""}; see the config file '
            'or brave_jax/config_base.py for the fields')
  text = errors.one_line(text.split('Pass --helpshort')[0])
  return text[len('flag '):] if text.startswith('flag ') else text


def config_flags_parser(config_flag: Any) -> Callable[[Sequence[str]], list[str]]:
  """An absl `flags_parser` for app.run: absl's parse, with config problems as one line, exit 2.

  config_flag: the holder config_flags.DEFINE_config_file returned.
  """
  def parse(argv: Sequence[str]) -> list[str]:
    spec = flag_value(argv[1:], 'config')
    try:
      if spec:
        try:
          config_base.load(spec)  # Missing file, error in the file, unknown variant.
        except (FileNotFoundError, errors.RunError) as error:
          raise errors.UsageError(f'--config={spec}: {error}') from error
      rest = flags.FLAGS(list(argv))
      config = config_flag.value  # config_flags applies the overrides here.
      if config is None:
        raise errors.UsageError('--config is required: --config=configs/<file>.py[:tiny|demo]')
      config_base.validate(config)
    except errors.RunError as error:
      errors.print_error(error)
      raise SystemExit(error.exit_code) from None
    except Exception as error:  # pylint: disable=broad-except
      errors.print_error(errors.UsageError(explain_flag_error(error, argv)))
      raise SystemExit(errors.EXIT_USAGE) from None
    return rest
  return parse
