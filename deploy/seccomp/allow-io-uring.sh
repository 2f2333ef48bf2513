#!/usr/bin/env bash
# Prints a container runtime's default seccomp profile with io_uring allowed: the profile given,
# plus the rule of io_uring.json (next to this script) allowing io_uring_setup, io_uring_enter and
# io_uring_register. Give it the default profile of the engine version you run
# (docs/containers.md, "Getting io_uring back"):
#
#   deploy/seccomp/allow-io-uring.sh default.json > iouring.json
#
# The profile's own rules are kept as they are. A call it already allows without conditions is not
# added again, so a second run on the output changes nothing. Prints nothing and fails, naming the
# problem, when the input is not one seccomp profile or already has a rule of another action for
# one of the three calls (which only a person can merge).
set -euo pipefail

fail() {
  echo "allow-io-uring: $*" >&2
  exit 1
}

[ $# -eq 1 ] || fail "usage: $0 <runtime-default-profile.json> > profile.json"
profile=$1
fragment="$(dirname "$0")/io_uring.json"
command -v jq >/dev/null || fail "jq is required (on Debian or Ubuntu: apt-get install jq)"
{ [ -f "$profile" ] && [ -r "$profile" ]; } || fail "$profile: no such readable file"
[ -f "$fragment" ] || fail "$fragment is missing: keep io_uring.json next to this script"

# shellcheck disable=SC2016 # the $names are jq's variables
program='
def profile($name):
  if type == "object" and (.syscalls | type) == "array"
     and all(.syscalls[]; type == "object" and (.names | type) == "array" and (.action | type) == "string")
  then .
  else error("\($name) is not a seccomp profile: it needs \"syscalls\", a list of rules each with \"names\" and \"action\"")
  end;
# A rule that applies whatever the arguments and the capabilities are.
def unconditional:
  ((.args // []) | length) == 0 and ((.includes // {}) | length) == 0 and ((.excludes // {}) | length) == 0;

if ($base | length) != 1 then error("\($input) holds \($base | length) JSON values, not one profile") else $base[0] end
| if type == "object" and (.defaultAction | type) == "string" then . else error("\($input) is not a seccomp profile: it has no \"defaultAction\"") end
| profile($input)
| reduce ($fragment[0] | profile($fragmentPath) | .syscalls[]) as $rule (.;
    ([.syscalls[] | select(.action != $rule.action) | .names[] | select(IN($rule.names[]))] | unique) as $conflicts
    | if $conflicts != [] then error("\($input) already has a rule with an action other than \($rule.action) for \($conflicts | join(", ")): merge it by hand") else . end
    | ([.syscalls[] | select(.action == $rule.action and unconditional) | .names[]]) as $allowed
    | ($rule | .names -= $allowed) as $rest
    | if $rest.names == [] then . else .syscalls += [$rest] end)
'

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
if ! merged=$(jq -n --arg input "$profile" --arg fragmentPath "$fragment" --slurpfile base "$profile" --slurpfile fragment "$fragment" "$program" 2>"$errors"); then
  # Without jq's own prefixes, which say nothing to the reader.
  fail "$(sed -e 's/^jq: error (at [^)]*): //' -e 's/^jq: Bad JSON in --slurpfile [a-z]* \(.*\): /\1 is not JSON: /' "$errors")"
fi
printf '%s\n' "$merged"
