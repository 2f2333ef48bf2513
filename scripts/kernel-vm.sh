#!/usr/bin/env bash
# Runs a command on another Linux kernel: Debian's kernel package, booted in QEMU, with the
# host's root file system as the guest's root (9p, read-write).
#
#   scripts/kernel-vm.sh [--kernel 6.1|6.12|7.2|<release>] [--timeout SECONDS]
#                        [--cpus N] [--memory SIZE] [--refresh] -- COMMAND...
#
# --kernel   a series (6.1: bookworm, 6.12: bookworm-backports, 7.x: sid; the newest release of
#            the series in the archive) or a kernel release as in a package name
#            (6.1.0-47-amd64, 7.2.13+deb14-amd64). Default 7.2.
# --timeout  the VM is powered off after this many seconds and the script exits with 124.
#            Default 3600.
# --cpus, --memory  QEMU's -smp and -m (defaults 2 and 4G; KERNEL_VM_CPUS, KERNEL_VM_MEMORY).
# --refresh  look for a newer release of the series now (otherwise the package lists are reused
#            for a day).
#
# COMMAND runs as root in the current directory with the host's environment (all variables but
# the few that describe the host's session: SSH_*, DISPLAY, XDG_RUNTIME_DIR, ...), the host's
# file-descriptor and memlock limits, stdin from /dev/null; its stdout and stderr arrive on the
# script's stdout and stderr, and its exit code is the script's (124: timed out, 125: the VM
# could not run it). KERNEL_VM=<kernel release> is added to the environment, so a test can tell
# it runs under emulation (QEMU's TCG: CPU-bound code is 10-40x slower). In the guest, /tmp, /run,
# /dev/shm are fresh tmpfs (a Unix socket cannot be bound on 9p); when the current directory is
# under /tmp, its top-level directory there is passed through. /proc, /sys, /sys/fs/bpf,
# /sys/fs/cgroup and devtmpfs are mounted; lo and dummy0 (an IPv6 link-local address) are up.
#
# Kernels and initramfs pieces are cached in ${KERNEL_VM_CACHE:-~/.cache/iouring-kernel-vm}.
# As root it installs what it needs (qemu-system-x86, busybox-static, cpio, xz-utils, zstd, kmod);
# otherwise it names the missing packages. KERNEL_VM_MIRROR overrides the Debian mirror (default:
# the machine's own Debian mirror, else http://deb.debian.org/debian). KERNEL_VM_KEEP=1 keeps
# the run directory (kernel log, QEMU's messages) for debugging.
set -euo pipefail

die() { echo "kernel-vm: $*" >&2; exit 125; }
note() { echo "kernel-vm: $*" >&2; }

kernel=7.2
timeout=3600
cpus=${KERNEL_VM_CPUS:-2}
memory=${KERNEL_VM_MEMORY:-4G}
refresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
    --kernel=*) kernel=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --cpus) [ $# -ge 2 ] || die "--cpus needs a value"; cpus=$2; shift 2 ;;
    --memory) [ $# -ge 2 ] || die "--memory needs a value"; memory=$2; shift 2 ;;
    --refresh) refresh=1; shift ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (usage: kernel-vm.sh [--kernel K] [--timeout S] -- COMMAND...)" ;;
  esac
done
[ $# -gt 0 ] || die "no command (usage: kernel-vm.sh [--kernel K] [--timeout S] -- COMMAND...)"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"
[[ $cpus =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported (amd64 kernels)"

cache=${KERNEL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iouring-kernel-vm}
mkdir -p "$cache"

# --- tools ---------------------------------------------------------------------------------
static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1 && { echo "$b"; return 0; }
  done
  return 1
}
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
static_busybox >/dev/null || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v zstd >/dev/null || missing+=(zstd)
depmod=$(PATH=$PATH:/usr/sbin:/sbin command -v depmod) || missing+=(kmod)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
for t in apt-get apt-cache dpkg-deb flock; do command -v $t >/dev/null || die "'$t' is required (a Debian or Ubuntu machine)"; done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root to install them, or apt-get install them)"
  note "installing ${missing[*]}"
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; }
  install || { apt-get update -qq >/dev/null 2>&1 || true; install; } \
    || die "apt-get install ${missing[*]} failed"
fi
busybox=$(static_busybox) || die "no static busybox (package busybox-static)"
depmod=$(PATH=$PATH:/usr/sbin:/sbin command -v depmod) || die "no depmod (package kmod)"

# --- kernel: resolve, fetch, cache ---------------------------------------------------------
# A private apt configuration: the machine's own sources, lists and cache are not touched.
mirror=${KERNEL_VM_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    | grep -v '/archive/' | head -n1 | tr -d '[:space:]' || true)
  mirror=${mirror%/}
  : "${mirror:=http://deb.debian.org/debian}"
fi
apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/empty"
{
  for suite in bookworm bookworm-backports sid; do
    echo "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
  done
} > "$apt_dir/sources.list.new"
cmp -s "$apt_dir/sources.list.new" "$apt_dir/sources.list" 2>/dev/null || { mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"; rm -f "$apt_dir/updated"; }
rm -f "$apt_dir/sources.list.new"
# Its own apt.conf (APT_CONFIG, read before the machine's apt.conf.d, which it replaces with an
# empty directory: none of the machine's hooks run, no pinning applies); the machine's Acquire
# settings (proxies, validity checks, retries) are kept, but not its extra index targets.
acquire_conf=$(apt-config dump 2>/dev/null | grep -E '^Acquire::' | grep -vE '^Acquire::(IndexTargets|Languages)' || true)
cat > "$apt_dir/apt.conf" <<EOF
Dir::Etc::parts "$apt_dir/empty";
Dir::Etc::sourcelist "$apt_dir/sources.list";
Dir::Etc::sourceparts "$apt_dir/empty";
Dir::Etc::preferences "$apt_dir/empty/none";
Dir::Etc::preferencesparts "$apt_dir/empty";
Dir::State::Lists "$apt_dir/lists";
Dir::Cache "$apt_dir/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
Acquire::Languages "none";
APT::Sandbox::User "$(id -un)";
$acquire_conf
// Release files are still checked against Debian's keys; only their expiry date is not: mirrors
// that are snapshots serve a sid whose Release has expired (seen: "invalid since 25d").
Acquire::Check-Valid-Until "false";
EOF
papt() { APT_CONFIG=$apt_dir/apt.conf "$@"; }

exec 9>"$cache/lock"
flock 9   # one fetch or initramfs build at a time; released before QEMU starts

apt_update() {
  note "reading Debian's package lists ($mirror: bookworm, bookworm-backports, sid)"
  papt apt-get -qq update >"$apt_dir/update.log" 2>&1 \
    || { cat "$apt_dir/update.log" >&2; return 1; }
  touch "$apt_dir/updated"
  rm -f "$apt_dir"/resolved-*
}
lists_fresh() { [ -n "$(find "$apt_dir/updated" -mmin -1440 2>/dev/null)" ]; }
has_candidate() { [[ $(papt apt-cache policy "$1" 2>/dev/null) == *"Candidate: "[0-9]* ]]; }

kernel=${kernel#linux-image-}
if [[ $kernel =~ ^[0-9]+\.[0-9]+$ ]]; then
  series_re="^linux-image-${kernel//./\\.}\.[0-9]+[-+.][^[:space:]]*-amd64\$"
  cached_newest() {
    local d
    for d in "$cache/kernels/$kernel".*; do [ -e "$d/ok" ] && echo "${d##*/}"; done | sort -V | tail -n1
  }
  release=
  if [ "$refresh" = 1 ] || ! lists_fresh; then
    if ! apt_update; then
      release=$(cached_newest)
      [ -n "$release" ] || die "cannot read Debian's package lists from $mirror and no $kernel kernel is cached"
      note "package lists unavailable; using the cached $release"
    fi
  fi
  # The series' newest release, as found in the current lists (apt-cache takes seconds).
  [ -n "$release" ] || [ ! -s "$apt_dir/resolved-$kernel" ] || release=$(cat "$apt_dir/resolved-$kernel")
  if [ -z "$release" ]; then
    for pkg in $(papt apt-cache pkgnames linux-image- 2>/dev/null | grep -E "$series_re" \
                 | grep -vE -- '-(cloud|rt)-amd64$' | sort -rV); do
      if has_candidate "$pkg"; then release=${pkg#linux-image-}; break; fi
    done
    [ -n "$release" ] || die "no kernel package for $kernel in $mirror (bookworm, bookworm-backports, sid): looked for linux-image-$kernel.*-amd64"
    echo "$release" > "$apt_dir/resolved-$kernel"
  fi
else
  release=$kernel
fi
kdir=$cache/kernels/$release

# The modules the guest needs, in any order (dependencies come from modules.dep); those built
# into the kernel are skipped. 9p carries the root file system; dummy gives a second interface.
want_modules=(virtio_pci 9pnet_virtio 9p dummy)

if [ ! -e "$kdir/ok" ]; then
  lists_fresh || apt_update || die "cannot read Debian's package lists from $mirror"
  if has_candidate "linux-binary-$release"; then
    pkgs=("linux-binary-$release" "linux-modules-$release")   # 7.x: split packages
  elif has_candidate "linux-image-$release"; then
    pkgs=("linux-image-$release")
  else
    die "no package linux-image-$release (or linux-binary-$release) in $mirror (bookworm, bookworm-backports, sid)"
  fi
  note "fetching ${pkgs[*]}"
  work=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && papt apt-get -qq download "${pkgs[@]}" >/dev/null 2>"$work/download.log") \
    || { cat "$work/download.log" >&2; die "apt-get download ${pkgs[*]} failed"; }
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
  vmlinuz=$(find "$work/root" \( -path "*/boot/vmlinuz-$release" -o -path "*/modules/$release/vmlinuz" \) | head -n1)
  moddir=$(find "$work/root" -type d -path "*/lib/modules/$release" | head -n1)
  [ -n "$vmlinuz" ] || die "no vmlinuz in ${pkgs[*]}"
  [ -n "$moddir" ] || die "no lib/modules/$release in ${pkgs[*]}"
  # The packages leave modules.dep to depmod (their postinst); build it here.
  "$depmod" -b "${moddir%/lib/modules/$release}" "$release" 2>/dev/null || die "depmod failed for $release"
  # Resolve dependencies (modules.dep lists each module's full closure) into a load order.
  declare -A dep_of=() path_of=() done_mod=()
  while IFS= read -r line; do
    p=${line%%:*}; n=${p##*/}; n=${n%%.ko*}; n=${n//-/_}
    path_of[$n]=$p; dep_of[$n]=${line#*:}
  done < "$moddir/modules.dep"
  builtin=$(sed 's|.*/||; s|\.ko.*||; s|-|_|g' "$moddir/modules.builtin" 2>/dev/null || true)
  order=()
  add_module() {
    local n=${1//-/_} d dn
    [ -z "${done_mod[$n]:-}" ] || return 0
    done_mod[$n]=1
    if [ -z "${path_of[$n]:-}" ]; then
      # Not a module: built in. (7.x's packages have no modules.builtin; the guest says so if not.)
      [ -z "$builtin" ] || grep -qx "$n" <<<"$builtin" && return 0
      die "kernel $release has no module $n (looked in modules.dep and modules.builtin)"
    fi
    for d in ${dep_of[$n]}; do dn=${d##*/}; dn=${dn%%.ko*}; add_module "$dn"; done
    order+=("$n")
  }
  for m in "${want_modules[@]}"; do add_module "$m"; done
  mkdir -p "$work/initrd/modules"
  : > "$work/initrd/modules/order"
  for n in "${order[@]}"; do
    src=$moddir/${path_of[$n]}
    case "$src" in
      *.ko.xz) xz -dc "$src" ;;
      *.ko.zst) zstd -qdc "$src" ;;
      *.ko.gz) gzip -dc "$src" ;;
      *) cat "$src" ;;
    esac > "$work/initrd/modules/$n.ko"
    echo "$n" >> "$work/initrd/modules/order"
  done
  mkdir -p "$kdir"
  cp "$vmlinuz" "$kdir/vmlinuz"
  (cd "$work/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) > "$kdir/modules.cpio"
  printf '%s\n' "${pkgs[@]}" > "$kdir/packages"
  touch "$kdir/ok"
  rm -rf "$work"; trap - EXIT
  note "cached kernel $release in $kdir"
fi

# --- the initramfs's generic part: busybox and /init ---------------------------------------
init_script=$(cat <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "kernel-vm guest: $*" >/dev/ttyS2
  echo "kernel-vm guest: $*"
  poweroff -f
}
while read -r m; do insmod "/modules/$m.ko" || fail "insmod $m failed"; done </modules/order
R=/mnt
mkdir -p $R
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot $R \
  || fail "mounting the host's root over 9p failed"
D=$R$kernelvm_dir
[ -f "$D/run.sh" ] || fail "no $kernelvm_dir/run.sh on the host"
. "$D/guest.conf"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t bpf -o mode=700 bpf $R/sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null
mount -t tracefs tracefs $R/sys/kernel/tracing 2>/dev/null
# /tmp: a tmpfs, with the directory of the working tree passed through when it is under /tmp.
if [ -n "$keep_tmp" ]; then mkdir -p /keep; mount -o bind "$R/tmp/$keep_tmp" /keep; fi
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
if [ -n "$keep_tmp" ]; then mkdir -p "$R/tmp/$keep_tmp"; mount -o bind /keep "$R/tmp/$keep_tmp"; fi
hostname "${host_name:-kernel-vm}"
ip link set lo up
echo 0 >/proc/sys/net/ipv6/conf/dummy0/accept_dad 2>/dev/null
ip link set dummy0 up 2>/dev/null
# The command's stdout and stderr: ttyS0 and ttyS2 (the host relays them to its own), through
# pipes unless the host's are terminals, as on the host.
exec 3>/dev/ttyS0 4>/dev/ttyS2
stty -F /dev/ttyS0 -opost
stty -F /dev/ttyS2 -opost
out=/dev/ttyS0 err=/dev/ttyS2 relays=
if [ "$out_tty" != 1 ]; then mkfifo /out; cat /out >&3 & relays="$relays $!"; out=/out; fi
if [ "$err_tty" != 1 ]; then mkfifo /err; cat /err >&4 & relays="$relays $!"; err=/err; fi
: >"$D/started" # the host boots again only a guest that died before this line
chroot $R /usr/bin/env -i /bin/bash --noprofile --norc "$kernelvm_dir/run.sh" </dev/null >$out 2>$err 3>&- 4>&-
rc=$?
# Output still in the pipes is relayed; a process the command left behind holding them is not
# waited for long.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  alive=; for p in $relays; do kill -0 $p 2>/dev/null && alive=1; done
  [ -n "$alive" ] || break
  sleep 0.1
done
echo $rc >"$D/rc"
exec 3>&- 4>&-
sync
poweroff -f
INIT
)
base_id=$( { sha256sum "$busybox" | cut -c1-16; printf '%s' "$init_script" | sha256sum | cut -c1-16; } | tr -d '\n')
base=$cache/base-$base_id.cpio
if [ ! -e "$base" ]; then
  work=$(mktemp -d "$cache/base.XXXXXX")
  mkdir -p "$work"/{bin,dev,proc,sys,mnt}
  cp "$busybox" "$work/bin/busybox"
  printf '%s\n' "$init_script" > "$work/init"
  chmod 755 "$work/init"
  (cd "$work" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$base.tmp"
  mv "$base.tmp" "$base"
  rm -rf "$work"
  for f in "$cache"/base-*.cpio; do [ "$f" = "$base" ] || rm -f "$f"; done
fi
flock -u 9; exec 9>&-

# --- the run directory: what the guest runs, and where it leaves the exit code --------------
rundir_parent=/var/tmp
[ -d "$rundir_parent" ] && [ -w "$rundir_parent" ] || rundir_parent=$cache
run=$(mktemp -d "$rundir_parent/kernel-vm.XXXXXX")
qemu_pid='' sleep_pid='' cat_pids=()
cleanup() {
  local s=$?
  set +e
  trap - EXIT INT TERM HUP
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$qemu_pid" 2>/dev/null
    wait "$qemu_pid" 2>/dev/null
  fi
  [ -z "$sleep_pid" ] || kill "$sleep_pid" 2>/dev/null
  # A relay still waiting for QEMU to open its FIFO gets an end of file.
  local f; for f in "$run/out" "$run/err"; do [ -p "$f" ] && { exec 7<>"$f"; exec 7>&-; }; done
  [ ${#cat_pids[@]} -eq 0 ] || wait "${cat_pids[@]}" 2>/dev/null
  if [ "${KERNEL_VM_KEEP:-0}" = 1 ]; then note "kept $run"; else rm -rf "$run"; fi
  exit "$s"
}
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

deny='^(SSH_.*|DISPLAY|WAYLAND_DISPLAY|XAUTHORITY|XDG_RUNTIME_DIR|XDG_SESSION_.*|DBUS_SESSION_BUS_ADDRESS|GPG_AGENT_INFO|SHLVL|PWD|OLDPWD|_|BASH_.*|COLUMNS|LINES|HOSTNAME|TERMCAP|KRB5CCNAME)$'
{
  echo "# generated by kernel-vm.sh"
  for name in $(compgen -e); do
    [[ $name =~ $deny ]] && continue
    printf 'export %s=%q\n' "$name" "${!name}"
  done
  echo "export KERNEL_VM=$(printf %q "$release")"
  printf 'ulimit -Hn %s 2>/dev/null; ulimit -Sn %s 2>/dev/null\n' "$(ulimit -Hn)" "$(ulimit -Sn)"
  printf 'ulimit -Hl %s 2>/dev/null; ulimit -Sl %s 2>/dev/null\n' "$(ulimit -Hl)" "$(ulimit -Sl)"
  printf 'cd -- %q || exit 125\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; echo
} > "$run/run.sh"
keep_tmp=
case "$PWD/" in /tmp/?*) keep_tmp=${PWD#/tmp/}; keep_tmp=${keep_tmp%%/*} ;; esac
out_tty=0; [ -t 1 ] && out_tty=1
err_tty=0; [ -t 2 ] && err_tty=1
printf 'keep_tmp=%q\nout_tty=%s\nerr_tty=%s\nhost_name=%q\n' "$keep_tmp" "$out_tty" "$err_tty" "$(hostname)" \
  > "$run/guest.conf"
mkfifo "$run/out" "$run/err"

qemu=(qemu-system-x86_64 -nodefaults -no-user-config -no-reboot -display none -monitor none
  -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$memory" -nic none
  -kernel "$kdir/vmlinuz" -initrd "$run/initrd"
  -append "console=ttyS1 quiet panic=-1 kernelvm_dir=$run ${KERNEL_VM_APPEND:-}"
  -serial "file:$run/out" -serial "file:$run/kernel.log" -serial "file:$run/err"
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,multidevs=remap)
cat "$kdir/modules.cpio" "$base" > "$run/initrd"
# QEMU dies with this script even on SIGKILL (setpriv --pdeathsig), else the trap stops it.
pdeath=(); [[ $(setpriv --help 2>&1) == *pdeathsig* ]] && pdeath=(setpriv --pdeathsig KILL)
# A guest that dies before it starts the command (seen: a 7.2 kernel's rare panic in the
# scheduler while booting under TCG) is booted again, up to KERNEL_VM_BOOT_TRIES times; one that
# started the command is never run twice.
tries=${KERNEL_VM_BOOT_TRIES:-3}
for ((attempt = 1; ; attempt++)); do
  rm -f "$run/rc" "$run/started"
  cat "$run/out" & cat_pids+=($!)
  cat "$run/err" >&2 & cat_pids+=($!)
  "${pdeath[@]}" "${qemu[@]}" </dev/null 2>"$run/qemu.log" &
  qemu_pid=$!
  sleep "$timeout" & sleep_pid=$!
  wait -n "$qemu_pid" "$sleep_pid" || true
  if kill -0 "$qemu_pid" 2>/dev/null; then
    note "timed out after ${timeout}s on kernel $release; powering the VM off"
    exit 124
  fi
  wait "$qemu_pid" && qemu_rc=0 || qemu_rc=$?
  qemu_pid=
  kill "$sleep_pid" 2>/dev/null; sleep_pid=
  wait "${cat_pids[@]}" 2>/dev/null || true; cat_pids=()
  if [ -f "$run/rc" ]; then
    exit "$(cat "$run/rc")"
  fi
  if [ ! -f "$run/started" ] && [ "$attempt" -lt "$tries" ]; then
    note "the guest died while booting (kernel $release, attempt $attempt of $tries); booting again. Its last lines:"
    tail -n 5 "$run/kernel.log" >&2 || true
    continue
  fi
  break
done
note "the guest ended without an exit code (kernel $release, QEMU exit $qemu_rc)"
grep -v 'TCG doesn.t support requested feature' "$run/qemu.log" | tail -n 20 >&2 || true
note "kernel log (last lines):"; tail -n 30 "$run/kernel.log" >&2 || true
exit 125
