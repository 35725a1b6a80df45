#!/bin/bash
# PID 1 of the lab VM (booted with init=/sbin/vipr-init; no systemd): mounts what vipr and the
# lab need, loads the netfilter and IPVS modules, mounts the host's output directory (9p), runs
# guest-run.sh with its output on the serial console and in /out/guest.log, then powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
echo "vipr-vm: init started after $(cut -d' ' -f1 /proc/uptime)s"

mnt() {
  local type=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  mountpoint -q "$dir" || mount -t "$type" "$@" "$type" "$dir"
}
# The initramfs moved /proc, /sys, /dev and /run here already; the others are ours.
mount -o remount,rw /
mnt proc /proc
mnt sysfs /sys
mnt devtmpfs /dev
mnt tmpfs /run -o mode=0755
mnt tmpfs /tmp
mnt devpts /dev/pts
mnt bpf /sys/fs/bpf
mnt cgroup2 /sys/fs/cgroup
hostname vipr-vm
ip link set lo up

# Modules the kernel would otherwise load on demand, loaded up front so a missing one shows
# here, not as a rule that fails to apply.
for m in ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh nf_conntrack nf_nat xt_conntrack xt_comment xt_mark \
  xt_MASQUERADE xt_addrtype xt_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip \
  ip_set_hash_ipportnet ip_set_bitmap_port nf_tables nft_chain_nat veth dummy sch_ingress cls_bpf \
  9p 9pnet_virtio; do
  modprobe "$m" || echo "vipr-vm: modprobe $m failed"
done

mkdir -p /out
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 viprout /out; then
  echo "vipr-vm: cannot mount the output share; results stay on the console only"
fi

/opt/vipr/scripts/lab-vm/guest-run.sh 2>&1 | tee /out/guest.log
code=${PIPESTATUS[0]}
echo "$code" >/out/exit-code
echo "vipr-vm: done (exit code $code) after $(cut -d' ' -f1 /proc/uptime)s"
sync
umount /out 2>/dev/null
# Power off at once (qemu runs with -no-reboot and exits): there is nothing else to stop.
echo o >/proc/sysrq-trigger
sleep 10
