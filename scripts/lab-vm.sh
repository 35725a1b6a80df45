#!/usr/bin/env bash
# Builds the lab VM's boot files from Debian packages only, for `vipr lab vm` (src/lab/vm.ts),
# which boots them with qemu:
#   base/          debootstrap minbase of bookworm + the tools vipr drives + linux-image-amd64
#                  (its modules ship IPVS, which this machine's kernel lacks). Built once, cached.
#   vmlinuz, initrd.img   the base's kernel, and an initramfs that can mount a virtio disk.
#   rootfs.img     ext4 image of base + this host's node binary + the built project (dist/,
#                  bpf/*.o, bench/, production node_modules) + the guest scripts (scripts/lab-vm/);
#                  rebuilt on every run so it holds the current build. `mkfs.ext4 -d` fills it without loop mounts.
#
# usage: scripts/lab-vm.sh build [--cache DIR] [--rebuild-base]
#        scripts/lab-vm.sh clean [--cache DIR]
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=/var/cache/vipr/lab-vm
SUITE=bookworm
# The mirror apt uses on this machine: debootstrap fetches nothing from anywhere else.
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=iproute2,ipvsadm,ipset,iptables,nftables,kmod,ethtool,curl,socat,libbpf1,procps,linux-image-amd64,initramfs-tools,zstd
ROOTFS_SIZE=1536M

die() {
  echo "lab-vm: $*" >&2
  exit 1
}

need() {
  local tool=$1 pkg=$2
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install $pkg)"
}

build_base() {
  local base=$CACHE/base
  if [ -x "$base/usr/sbin/ipvsadm" ] && [ "${REBUILD_BASE:-0}" = 0 ]; then
    return
  fi
  need debootstrap debootstrap
  rm -rf "$base" "$base.tmp"
  echo "lab-vm: debootstrap $SUITE (minbase) from $MIRROR into $base"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$base.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $CACHE/debootstrap.log"
  # The initramfs only has to find an ext4 root on a virtio disk.
  # MODULES=dep would look at the build host's devices: list what the guest needs instead.
  printf '%s\n' virtio_pci virtio_blk crc32c_generic ext4 >>"$base.tmp/etc/initramfs-tools/modules"
  sed -i 's/^MODULES=.*/MODULES=list/' "$base.tmp/etc/initramfs-tools/initramfs.conf"
  chroot "$base.tmp" update-initramfs -u -k all >>"$CACHE/debootstrap.log" 2>&1 ||
    die "update-initramfs failed; see $CACHE/debootstrap.log"
  rm -rf "$base.tmp/var/cache/apt/archives/"*.deb
  # Drivers a virtio VM never loads are most of the image: drop them (netfilter, IPVS, BPF,
  # virtio and filesystems stay).
  local kdir
  for kdir in "$base.tmp"/lib/modules/*; do
    rm -rf "$kdir"/kernel/{sound,drivers/{gpu,media,infiniband,staging,iio,bluetooth,net/wireless,net/ethernet,usb,isdn,hid,input}}
    chroot "$base.tmp" depmod "$(basename "$kdir")"
  done
  mv "$base.tmp" "$base"
}

# The project's runtime: dist/, the BPF objects, and only the production node_modules.
copy_project() {
  local dest=$1
  [ -f "$REPO/dist/src/cli/main.js" ] || die "dist/ is not built: run 'make build' first"
  compgen -G "$REPO/bpf/*.bpf.o" >/dev/null || die "no bpf/*.bpf.o: run 'make build' first"
  mkdir -p "$dest/bpf" "$dest/scripts"
  cp -a "$REPO/package.json" "$REPO/dist" "$dest/"
  cp -a "$REPO"/bpf/*.bpf.o "$dest/bpf/"
  cp -a "$REPO/scripts/lab-vm" "$dest/scripts/"
  # vipr bench's C programs, sources and binaries with their times (it rebuilds older binaries).
  if [ -d "$REPO/bench" ]; then
    cp -a "$REPO/bench" "$dest/"
  fi
  (cd "$REPO" && npm ls --omit=dev --all --parseable 2>/dev/null) | while read -r dir; do
    case $dir in
      "$REPO"/node_modules/*)
        mkdir -p "$dest/$(dirname "${dir#"$REPO"/}")"
        cp -a "$dir" "$dest/${dir#"$REPO"/}"
        ;;
    esac
  done
}

build_rootfs() {
  local stage=$CACHE/stage
  need mkfs.ext4 e2fsprogs
  rm -rf "$stage"
  cp -a "$CACHE/base" "$stage"
  install -m 0755 "$(command -v node)" "$stage/usr/local/bin/node"
  copy_project "$stage/opt/vipr"
  printf '#!/bin/sh\nexec /usr/local/bin/node /opt/vipr/dist/src/cli/main.js "$@"\n' >"$stage/usr/local/bin/vipr"
  chmod 0755 "$stage/usr/local/bin/vipr"
  install -m 0755 "$REPO/scripts/lab-vm/guest-init.sh" "$stage/sbin/vipr-init"
  echo vipr-vm >"$stage/etc/hostname"
  mkdir -p "$stage/out"
  rm -f "$CACHE/rootfs.img"
  mkfs.ext4 -q -F -L viprroot -d "$stage" "$CACHE/rootfs.img" "$ROOTFS_SIZE"
  rm -rf "$stage"
  # The kernel and initramfs the base installed (its only kernel), at fixed names for qemu.
  local kernels=("$CACHE"/base/boot/vmlinuz-*) initrds=("$CACHE"/base/boot/initrd.img-*)
  cp "${kernels[0]}" "$CACHE/vmlinuz"
  cp "${initrds[0]}" "$CACHE/initrd.img"
  echo "lab-vm: image ready: $CACHE/{vmlinuz,initrd.img,rootfs.img} (kernel $(ls "$CACHE/base/lib/modules"))"
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  while [ $# -gt 0 ]; do
    case $1 in
      --cache) CACHE=$2; shift 2 ;;
      --rebuild-base) REBUILD_BASE=1; shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  case $cmd in
    build)
      [ "$(id -u)" = 0 ] || die "building the image needs root (debootstrap, chroot)"
      mkdir -p "$CACHE"
      build_base
      build_rootfs
      ;;
    clean)
      rm -rf "$CACHE"
      ;;
    *)
      echo "usage: $0 build|clean [--cache DIR] [--rebuild-base]" >&2
      exit 2
      ;;
  esac
}

main "$@"
