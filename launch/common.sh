# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): dry-run printing and errors.
# The sourcing script sets DRY_RUN (0/1) and SCRIPT_NAME.

die() { echo "${SCRIPT_NAME}: $*" >&2; exit 2; }

quote() {
  # Shell-quotes one word for display: plain words as they are, others in single quotes.
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

run() {
  # Prints the command, ready to paste; runs it unless --dry-run.
  printf '+'; for word in "$@"; do printf ' '; quote "$word"; done; printf '\n'
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}
