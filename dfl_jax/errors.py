"""One error style for every command: a user's mistake is one line, a bug keeps its traceback.

Every command's ``command()`` runs its ``main`` through ``errors.run`` instead of
``absl.app.run``. Then

  * a flag that does not parse (an unknown flag, an unknown configuration key such as
    ``--config.train.bogus=1``, a value of the wrong type) prints ``error: ...`` naming the flag,
    with the closest valid keys, and exits 2;
  * ``UserError`` (a mistake in a flag, a configuration value, an input file or record: the
    message names it) and ``absl.app.UsageError`` print ``error: ...`` and exit
    ``UserError.exit_code``: 2 for mistakes, 3 for faults of the machine the user can mend
    (``EnvironmentFault``: a full disk, a workdir held by another run, a read-only folder);
  * any other exception is a bug or an unforeseen failure: absl prints its traceback, exit 1.

``--debug`` (a flag of every command) or the environment variable ``DFL_DEBUG=1`` shows the
traceback of user errors too.

The exception classes also derive from the built-in type a caller would catch (``ValueError``,
``FileNotFoundError``, ``OSError``), so library code that catches those keeps working.
"""

import difflib
import errno
import os
import runpy
import sys
import traceback

from absl import app, flags

DEBUG_ENV = "DFL_DEBUG"
USAGE_EXIT, FAULT_EXIT = 2, 3

flags.DEFINE_bool("debug", False, f"Show the traceback of user errors too (or set {DEBUG_ENV}=1).")


class UserError(Exception):
  """A mistake the user can correct; the message names the flag, key, file or record."""
  exit_code = USAGE_EXIT


class ConfigError(UserError, ValueError):
  """A configuration value that is unknown, of the wrong type, out of range or missing."""


class InputError(UserError, ValueError):
  """A bad input file or record (malformed JSON, a wrong field, an unreadable image)."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user named (or a command needs) does not exist."""


class EnvironmentFault(UserError, OSError):
  """The machine, not the input: a full disk, a busy workdir, a folder that cannot be written."""
  exit_code = FAULT_EXIT


def debugging(argv=None) -> bool:
  """True when tracebacks of user errors are wanted (``--debug`` or ``DFL_DEBUG``)."""
  if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
    return True
  if flags.FLAGS.is_parsed():
    return bool(flags.FLAGS.debug)
  return any(a in ("--debug", "--debug=true", "--debug=True", "--debug=1")
             for a in (argv or sys.argv))


def fail(message: str, exit_code: int = USAGE_EXIT, argv=None, flag_help: bool = False):
  """Prints ``error: message`` (one paragraph) to stderr and exits with ``exit_code``;
  ``flag_help`` adds where the flags are listed."""
  if debugging(argv):
    traceback.print_exc()
  program = os.path.basename((argv or sys.argv or ["dfl"])[0])
  print(f"error: {message}", file=sys.stderr)
  if flag_help:
    print(f"(`{program} --helpfull` lists every flag)", file=sys.stderr)
  sys.stderr.flush()
  sys.exit(exit_code)


def one_line(e: BaseException, limit: int = 600) -> str:
  """The first line of an exception's message (library errors carry pages), at most ``limit``."""
  lines = [x for x in str(e).strip().splitlines() if x.strip()]
  text = lines[0] if lines else type(e).__name__
  return text if len(text) <= limit else text[:limit] + "..."


# --- flags and configuration overrides ---


def _config_files(argv):
  """{flag name: config file} for ``--NAME=path.py`` arguments whose file is a config."""
  out = {}
  for a in argv[1:]:
    if a.startswith("--") and "=" in a:
      name, value = a[2:].split("=", 1)
      if "." not in name and value.endswith(".py"):
        out[name] = value
  return out


def _flat_keys(config, prefix=""):
  keys = []
  for k, v in config.items():
    path = f"{prefix}{k}"
    keys.append(path)
    if hasattr(v, "items") and callable(v.items):
      keys.extend(_flat_keys(v, path + "."))
  return keys


def unknown_key_message(config, path: str, flag: str = "config") -> str | None:
  """The message for ``--flag.path`` when ``path`` is not a key of ``config``, else None."""
  node, walked = config, []
  for part in path.split("."):
    if hasattr(node, "keys") and part in node.keys():
      node = node[part]
      walked.append(part)
      continue
    where = f"{flag}." + ".".join(walked) if walked else flag
    siblings = list(node.keys()) if hasattr(node, "keys") else []
    # the same name in another group first, then close names in this one
    close = [f"{flag}.{k}" for k in _flat_keys(config) if k.rpartition(".")[2] == part]
    close = close or [f"{where}.{k}" for k in difflib.get_close_matches(
        part, siblings, n=3, cutoff=0.5)]
    if close:
      hint = f"; did you mean {', '.join('--' + c for c in close[:3])}?"
    elif siblings:
      shown = sorted(map(str, siblings))
      hint = f"; its keys: {', '.join(shown[:40])}{', ...' if len(shown) > 40 else ''}"
    else:
      hint = ""
    if not hasattr(node, "keys"):
      return f"--{flag}.{path}: {where} is a value, not a group of keys{hint}"
    return f"--{flag}.{path}: {where} has no key '{part}'{hint}"
  return None


def _load_config_file(path):
  """``get_config()`` of a config file, or None when it cannot be loaded."""
  try:
    module = runpy.run_path(path)
    return module["get_config"]()
  except Exception:  # pylint: disable=broad-except
    return None


def explain_flag_error(error: BaseException, argv) -> str:
  """One line for a flag that did not parse, naming the flag (and the closest valid keys)."""
  for name, path in _config_files(argv).items():
    if not os.path.isfile(path):
      return f"--{name}={path}: no such configuration file"
    config = None
    for a in argv[1:]:
      if a.startswith(f"--{name}."):
        key = a[len(name) + 3:].split("=", 1)[0]
        config = config if config is not None else _load_config_file(path)
        if config is None:
          break
        message = unknown_key_message(config, key, name)
        if message:
          return message
  text = one_line(error)
  if isinstance(error, (AttributeError, KeyError)):
    text = f"an unknown flag or configuration key ({text})"
  return text


def parse_flags(argv):
  """absl's flag parsing, with this module's one-line message and exit 2 on a bad flag."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    # config_flags lets the configuration's own errors (AttributeError, KeyError, TypeError)
    # out of the parser: they are all a bad flag from here.
    fail(explain_flag_error(e, argv), USAGE_EXIT, argv, flag_help=True)
  return None


FAULT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


def classify(error: BaseException):
  """(message, exit code) when ``error`` is the user's to mend, else None (a bug: traceback).

  Besides ``UserError`` and ``absl.app.UsageError``: an ``OSError`` naming a file (a path the
  user gave that does not exist or cannot be written) and a full disk anywhere.
  """
  if isinstance(error, UserError):
    return str(error).strip(), error.exit_code
  if isinstance(error, app.UsageError):
    return one_line(error), USAGE_EXIT
  if isinstance(error, OSError) and (error.filename or error.errno in FAULT_ERRNOS):
    code = FAULT_EXIT if error.errno in FAULT_ERRNOS else USAGE_EXIT
    what = f"{error.filename}: " if error.filename else ""
    return f"{what}{error.strerror or one_line(error)}", code
  return None


def call(main, *args):
  """``main(*args)``, with a user error turned into ``error: ...`` and its exit code."""
  try:
    return main(*args)
  except (UserError, app.UsageError, OSError) as e:
    known = classify(e)
    if known is None:
      raise
    fail(*known)
  return None


def run(main, argv=None):
  """``absl.app.run(main)`` with the error style above."""
  app.run(lambda args: call(main, args), argv=argv, flags_parser=parse_flags)


def add_debug_argument(parser):
  """``--debug`` for an argparse command (the absl commands have it as a flag)."""
  parser.add_argument("--debug", action="store_true",
                      help=f"show the traceback of user errors too (or set {DEBUG_ENV}=1)")
  return parser
