#!/usr/bin/env bash
# A real one-node SLURM on this machine, for the `slurm` tests: start | stop | status.
# Needs root (it installs Debian's slurm packages when missing and starts the daemons).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
PIDS=(/run/slurmctld.pid /run/slurmd.pid /run/munge/munged.pid)

install() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
}

write_config() {
  local host node
  host=$(hostname -s)
  node=$(slurmd -C | head -n1)
  mkdir -p /etc/slurm /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  chown munge:munge /run/munge
  cat >"$CONF" <<CONFIG
ClusterName=degrade
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
KillWait=3
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONFIG
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install
  write_config
  alive /run/munge/munged.pid || runuser -u munge -- munged
  alive /run/slurmctld.pid || slurmctld
  alive /run/slurmd.pid || slurmd
  for _ in $(seq 1 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
    if [ "$state" = "idle" ]; then
      echo "slurm: node $(hostname -s) idle"
      return 0
    fi
    sleep 1
  done
  echo "slurm: node did not become idle (state: ${state:-none}); see /var/log/slurm/" >&2
  return 1
}

stop() {
  # By the PIDs in the pid files, never by name: other daemons of the machine stay up.
  for f in "${PIDS[@]}"; do
    if alive "$f"; then
      kill "$(cat "$f")" || true
    fi
  done
  for f in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do alive "$f" || break; sleep 0.1; done
  done
  echo "slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo -h -o "%N %T" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
