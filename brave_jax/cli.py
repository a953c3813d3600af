"""The config on the command line, one way for every entry point (train, evaluate, plan).

`--config=configs/<file>.py[:variant]` picks a config file and variant;
`--config.a.b=value` sets one field, the value read as the field's type (as
ml_collections' config_flags reads it: ints, floats, true/false, tuples
such as `'(1, 2)'`, strings as given). brave_jax.main and brave_jax.plan
keep absl for their other flags (`absl_flags_parser`); brave_jax.evaluate uses
argparse (`ArgumentParser`). Either way a missing file, an unknown variant, an
unknown field, a bad value or a config that fails validation is one line,
`error: ...`, exit status 2, before anything starts.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
from typing import Any, Callable, NoReturn, Sequence

from absl import flags
import ml_collections
from ml_collections.config_flags import config_path
from ml_collections.config_flags import tuple_parser

from brave_jax import config_base
from brave_jax import errors

OVERRIDE_PREFIX = '--config.'
CONFIG_HELP = ('configs/<file>.py[:variant]; set fields with --config.<section>.<field>=<value>')

# Field type -> how its command-line text is read (config_flags' parsers, so values mean what
# they meant when main.py used config_flags).
_PARSERS = {
    bool: flags.BooleanParser(),
    int: flags.IntegerParser(),
    float: flags.FloatParser(),
    tuple: tuple_parser.TupleParser(),
    str: flags.ArgumentParser(),
}


def split_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
  """([(field path, text)] of the --config.* arguments, the other arguments in order).

  `--config.a.b=v` and `--config.a.b v` both set a.b; a bare `--config.a.b`
  (followed by another flag) has text None: true for a boolean field, as for
  absl boolean flags, and an error for any other.
  """
  overrides, rest = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg == '--':
      rest.extend(argv[i:])
      break
    if arg.startswith(OVERRIDE_PREFIX):
      key, has_value, text = arg[len(OVERRIDE_PREFIX):].partition('=')
      if not has_value:
        if i + 1 < len(argv) and not argv[i + 1].startswith('-'):
          i += 1
          text = argv[i]
        else:
          text = None
      overrides.append((key, text))
    else:
      rest.append(arg)
    i += 1
  return overrides, rest


def load(spec: str) -> ml_collections.ConfigDict:
  """The config `--config=spec` names; a missing file, an error in it or an unknown variant is a UsageError."""
  try:
    return config_base.load(spec)
  except (FileNotFoundError, errors.RunError) as error:
    raise errors.UsageError(f'--config={spec}: {error}') from error


def _no_field(key: str, known: Sequence[str], missing: str) -> errors.UsageError:
  close = difflib.get_close_matches(missing, list(known), n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  return errors.UsageError(f'{OVERRIDE_PREFIX}{key}: the config has no field {key!r}{hint}; see '
                           'the config file or brave_jax/config_base.py for the fields')


def parse_value(config: ml_collections.ConfigDict, key: str, text: str | None) -> Any:
  """`text` read as the type of field `key` (a dotted path), as config_flags reads it."""
  field_type = config_path.get_type(key, config)
  if text is None:  # A bare --config.a.b.
    if field_type is bool:
      return True
    raise errors.UsageError(f'{OVERRIDE_PREFIX}{key} needs a value: {OVERRIDE_PREFIX}{key}=<value>')
  if field_type is bool:
    try:
      return _PARSERS[bool].parse(text)
    except ValueError:
      raise errors.UsageError(f'{OVERRIDE_PREFIX}{key}={text}: expected true or false') from None
  if field_type in _PARSERS:
    try:
      return _PARSERS[field_type].parse(text)
    except ValueError as error:
      raise errors.UsageError(f'{OVERRIDE_PREFIX}{key}={text}: {error}') from None
  # Fields declared with field_type=object (e.g. eval.svm_c: a number or 'auto'): a Python
  # literal if the text is one, else the text.
  literal = text.capitalize() if text in ('true', 'false') else text
  try:
    return ast.literal_eval(literal)
  except (SyntaxError, ValueError):
    return text


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str | None]]) -> None:
  """Sets each `--config.a.b=value`, refusing fields and sections the config does not have."""
  for key, text in overrides:
    node = config
    parts = key.split('.')
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise _no_field(key, node.keys() if isinstance(node, ml_collections.ConfigDict) else (),
                        part)
      if depth < len(parts) - 1:
        node = node[part]
    if isinstance(node[parts[-1]], ml_collections.ConfigDict):
      raise errors.UsageError(f'{OVERRIDE_PREFIX}{key} is a section, not a field: set its fields '
                              f'({OVERRIDE_PREFIX}{key}.<field>=<value>)')
    value = parse_value(config, key, text)
    try:
      node[parts[-1]] = value
    except (TypeError, ValueError) as error:
      raise errors.UsageError(f'{OVERRIDE_PREFIX}{key}={text}: {errors.one_line(error)}') from None


def resolve(spec: str | None, overrides: Sequence[tuple[str, str | None]], *,
            base: ml_collections.ConfigDict | None = None,
            lock: bool = False) -> ml_collections.ConfigDict:
  """The config file `spec` names (else `base`), overrides applied, validated (device counts aside).

  `lock`: no field may be added afterwards (as config_flags' lock_config).
  """
  if spec:
    config = load(spec)
  elif base is not None:
    config = base
  else:
    raise errors.UsageError('--config is required: --config=configs/<file>.py[:tiny|demo]')
  apply_overrides(config, overrides)
  config_base.validate(config)
  if lock:
    config.lock()
  return config


def exit_with(error: errors.RunError) -> NoReturn:
  """Prints the one-line `error: ...` and exits with the error's status."""
  errors.print_error(error)
  raise SystemExit(error.exit_code) from None


# ----------------------------------------------------------------------------- absl entry points


@dataclasses.dataclass
class ParsedConfig:
  """What `absl_flags_parser` read: the --config spec and the resolved config."""
  spec: str | None = None
  config: ml_collections.ConfigDict | None = None


def define_config_flag() -> flags.FlagHolder:
  """absl's --config (the spec only: its --config.* overrides never reach absl)."""
  return flags.DEFINE_string('config', None, CONFIG_HELP)


def absl_flags_parser(parsed: ParsedConfig, *, default_spec: str | None = None,
                      lock: bool = True) -> Callable[[Sequence[str]], list[str]]:
  """An absl `flags_parser` for app.run: --config.* read here, the other flags by absl.

  Fills `parsed` (spec and config, locked unless `lock=False`) before the
  program starts; without --config, `default_spec` (else an error). Every
  problem is one line and exit status 2.
  """
  def parse(argv: Sequence[str]) -> list[str]:
    overrides, rest = split_overrides(argv[1:])
    try:
      try:
        remaining = flags.FLAGS([argv[0]] + rest)
      except flags.Error as error:
        raise errors.UsageError(str(error).split('Pass --helpshort')[0].strip()) from None
      parsed.spec = flags.FLAGS['config'].value or default_spec
      parsed.config = resolve(parsed.spec, overrides, lock=lock)
    except errors.RunError as error:
      exit_with(error)
    return remaining
  return parse


# ----------------------------------------------------------------------------- argparse entry points


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose mistakes (unknown flag, bad choice) are one `error: ...` line, exit status 2."""

  def error(self, message: str) -> NoReturn:
    exit_with(errors.UsageError(f'{message} (see {self.prog} --help)'))

  def parse_with_overrides(self, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses argv; `--config.<field>=<value>` arguments go to `args.overrides`."""
    import sys  # pylint: disable=g-import-not-at-top
    overrides, rest = split_overrides(sys.argv[1:] if argv is None else list(argv))
    args = self.parse_args(rest)
    args.overrides = overrides
    return args
