# Helpers shared by perf/run.sh, perf/proxy.sh and perf/rate.sh (sourced; they set PERF and ROOT first).

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_missing <package>...: apt-get install the given Debian packages, when root on a system with apt.
install_missing() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing $*"
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || true
  fi
}

# require <tool>...: stop unless every tool is on PATH.
require() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done
}

# build_release <project>...: Release builds into perf/.artifacts/, as perf/run.sh does, so a
# solution build running at the same time keeps its bin/ and obj/. Quiet unless the build fails.
build_release() {
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
  local project
  for project in "$@"; do
    log "building $project (Release)"
    dotnet build "$ROOT/$project" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q >/dev/null \
      || { dotnet build "$ROOT/$project" -c Release --artifacts-path "$PERF/.artifacts" -nologo -v q | tail -30; die "build failed"; }
  done
}

# utime + stime of a process (fields 14 and 15 of /proc/<pid>/stat, after the command name).
process_ticks() {
  local stat rest
  stat=$(< "/proc/$1/stat"); rest=${stat##*) }
  read -r -a f <<< "$rest"
  echo $(( f[11] + f[12] ))
}
