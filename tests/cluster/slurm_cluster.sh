#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for testing profiles/slurm/.
#
#   tests/cluster/slurm_cluster.sh up       install (apt, once) and start munged, slurmctld, slurmd
#   tests/cluster/slurm_cluster.sh status   print daemon and node state; exit 0 only if usable
#   tests/cluster/slurm_cluster.sh env      print `export SLURM_CONF=<the cluster's slurm.conf>`
#   tests/cluster/slurm_cluster.sh down     stop the daemons (by PID file), remove the folder
#
# Needs root on Debian/Ubuntu (apt-get) and no systemd: the daemons are started directly.
# `up` is idempotent: daemons that already run are left alone, a drained node is resumed.
# Everything (config, munge key and socket, state, logs, PID files, fake GPU devices) lives in
# one folder, $MEMAUDIT_SLURM_DIR (default /tmp/memaudit-slurm). The one file outside it is the
# symlink /etc/slurm/slurm.conf -> $DIR/etc/slurm.conf (made only where no slurm.conf exists,
# removed by `down`): the plugin's job step drops SLURM_CONF from the environment of the `srun`
# it runs inside each job, so jobs find the cluster only at the standard path.
#
# Settings (environment variables):
#   MEMAUDIT_SLURM_DIR        cluster folder                       [/tmp/memaudit-slurm]
#   MEMAUDIT_SLURM_GPUS       number of fake GPUs on the node      [2]
#   MEMAUDIT_SLURM_PARTITION  name of the (default) partition      [debug]
#   MEMAUDIT_SLURM_KEEP=1     `down` stops the daemons but keeps the folder (logs) for debugging
#
# Why each choice (measured on Debian 12, slurm-wlm 22.05, as root, no systemd, no cgroups):
#   - munged runs as user `munge`, with its own key, socket, log and PID file in the folder;
#     slurm is pointed at that socket with AuthInfo=socket=...
#   - ProctrackType=proctrack/pgid and TaskPlugin=task/none need no cgroups.
#   - Fake GPUs: gres.conf with AutoDetect=off and File= symlinks to /dev/null (count-only GPUs
#     are dropped and regular files are rejected by slurmd).
#   - No slurmdbd, so no accounting: the snakemake plugin must query with squeue, which only sees
#     jobs for MinJobAge seconds after they end. MinJobAge must be >= 3 x the plugin's initial
#     status delay (40 s), else the plugin switches to sacct, which fails without slurmdbd, and
#     the run hangs. 3600 also keeps a whole test run's jobs listed by `scontrol show job`, which
#     is how the tests check what each job asked for.
#   - SelectType=select/cons_tres (needed for --gpus) with CR_Core_Memory: CPUs and memory are
#     scheduled as on a real cluster, so a job asking for more than the node has is rejected.
#   - SlurmctldDebug=debug: a detailed controller log ($DIR/log/) for diagnosing failures.
set -euo pipefail

DIR="${MEMAUDIT_SLURM_DIR:-/tmp/memaudit-slurm}"
N_GPUS="${MEMAUDIT_SLURM_GPUS:-2}"
PARTITION="${MEMAUDIT_SLURM_PARTITION:-debug}"
GPU_TYPE="fakegpu"
NODE="$(hostname -s)"
SLURM_USER="slurm"

CONF="$DIR/etc/slurm.conf"
SYSTEM_CONF="/etc/slurm/slurm.conf"
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
export SLURM_CONF="$CONF"

log() { echo "[slurm_cluster] $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# --- helpers -----------------------------------------------------------------------------------

pid_alive() { # pid_alive PIDFILE -> 0 if the file names a running process
    local pidfile="$1" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

stop_pidfile() { # stop_pidfile NAME PIDFILE: TERM, wait up to 15 s, then KILL
    local name="$1" pidfile="$2" pid i
    if ! pid_alive "$pidfile"; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "$name (pid $pid) stopped"
}

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sbatch squeue scontrol munged mungekey; do
        command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" \
            >/dev/null 2>&1 || missing=1
    done
    if [[ $missing -eq 0 ]]; then
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "SLURM is not installed and installing it needs root"
    command -v apt-get >/dev/null 2>&1 || die "SLURM is not installed and apt-get is missing"
    log "installing slurmctld slurmd slurm-client munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    # Package scripts may try to start the services; without systemd that fails harmlessly.
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >"${TMPDIR:-/tmp}/memaudit-slurm-apt.log" 2>&1 ||
        die "apt-get install failed, see ${TMPDIR:-/tmp}/memaudit-slurm-apt.log"
}

real_memory_mb() { # a bit below the node's total memory, so slurmd never finds it short
    local total
    total="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
    echo $((total * 90 / 100))
}

write_config() {
    local cpus mem i gpu_files
    cpus="$(nproc --all)"
    mem="$(real_memory_mb)"
    mkdir -p "$DIR/etc" "$DIR/log" "$DIR/run" "$DIR/spool" "$DIR/state" "$DIR/dev"
    chmod 755 "$DIR" "$DIR/etc" "$DIR/log" "$DIR/run" "$DIR/dev"
    # slurmctld drops to SlurmUser before writing its state, log and PID file.
    chown "$SLURM_USER:$SLURM_USER" "$DIR/state" "$DIR/log" "$DIR/run"
    for i in $(seq 0 $((N_GPUS - 1))); do
        ln -sfn /dev/null "$DIR/dev/gpu$i"
    done
    gpu_files="$DIR/dev/gpu[0-$((N_GPUS - 1))]"

    cat >"$CONF" <<EOF
# Written by tests/cluster/slurm_cluster.sh: one node, no accounting, no cgroups, fake GPUs.
ClusterName=memaudit
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=debug
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
MinJobAge=3600
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$GPU_TYPE:$N_GPUS \
 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu Type=$GPU_TYPE File=$gpu_files
EOF
    echo "export SLURM_CONF=$CONF" >"$DIR/env"
}

link_system_conf() { # /etc/slurm/slurm.conf -> our config, never replacing a real one
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        return 0
    fi
    if [[ -e "$SYSTEM_CONF" || -L "$SYSTEM_CONF" ]]; then
        die "$SYSTEM_CONF exists and is not this test cluster's; refusing to replace it"
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

unlink_system_conf() {
    if [[ -L "$SYSTEM_CONF" && "$(readlink "$SYSTEM_CONF")" == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

start_munge() {
    if pid_alive "$MUNGE_DIR/munged.pid"; then
        log "munged already running (pid $(cat "$MUNGE_DIR/munged.pid"))"
        return 0
    fi
    mkdir -p "$MUNGE_DIR"
    if [[ ! -s "$MUNGE_DIR/munge.key" ]]; then
        mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    fi
    chown -R munge:munge "$MUNGE_DIR"
    chmod 755 "$MUNGE_DIR" # the socket must be reachable by every client
    chmod 600 "$MUNGE_DIR/munge.key"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" ||
        die "munged failed to start, see $MUNGE_DIR/munged.log"
    log "munged started"
}

start_slurm() {
    local sbin="/usr/sbin"
    if pid_alive "$DIR/run/slurmctld.pid"; then
        log "slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
    else
        # -c: cold start, forget jobs from an earlier cluster in the same folder.
        "$sbin/slurmctld" -c -f "$CONF" || die "slurmctld failed, see $DIR/log/slurmctld.log"
        log "slurmctld started"
    fi
    if pid_alive "$DIR/run/slurmd.pid"; then
        log "slurmd already running (pid $(cat "$DIR/run/slurmd.pid"))"
    else
        "$sbin/slurmd" -f "$CONF" || die "slurmd failed, see $DIR/log/slurmd.log"
        log "slurmd started"
    fi
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_ready() { # until the node accepts jobs (idle/mixed/allocated), at most 60 s
    local i state=""
    for i in $(seq 1 120); do
        state="$(node_state || true)"
        case "$state" in
        idle | mixed | allocated | completing) return 0 ;;
        drained* | draining* | down*)
            # A node left down/drained by an earlier run: hand it back to the scheduler.
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        sleep 0.5
    done
    log "node $NODE not ready after 60 s (state: '${state:-none}'); logs in $DIR/log/"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    return 1
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
    local t0
    t0="$(date +%s.%N)"
    [[ $EUID -eq 0 ]] || die "must run as root (starts system daemons)"
    install_packages
    local t1
    t1="$(date +%s.%N)"
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        write_config # never rewrite the config under running daemons
    fi
    link_system_conf
    start_munge
    start_slurm
    wait_ready || die "cluster did not come up"
    log "$(awk -v a="$t0" -v b="$t1" -v c="$(date +%s.%N)" \
        'BEGIN {printf "ready: install %.1f s, start %.1f s", b - a, c - b}')"
    log "config: $CONF (linked from $SYSTEM_CONF)"
}

cmd_status() {
    local ok=0 d
    for d in "munged:$MUNGE_DIR/munged.pid" "slurmctld:$DIR/run/slurmctld.pid" \
        "slurmd:$DIR/run/slurmd.pid"; do
        if pid_alive "${d#*:}"; then
            echo "${d%%:*}: running (pid $(cat "${d#*:}"))"
        else
            echo "${d%%:*}: stopped"
            ok=1
        fi
    done
    if [[ $ok -eq 0 ]]; then
        echo "SLURM_CONF=$CONF"
        sinfo -N -o '%N %P %T %c %m %G' || ok=1
        case "$(node_state)" in idle | mixed | allocated | completing) ;; *) ok=1 ;; esac
    fi
    return $ok
}

cmd_down() {
    local i
    if pid_alive "$DIR/run/slurmctld.pid"; then
        # Jobs outlive slurmd (their slurmstepd keeps running): cancel every job of this cluster.
        squeue -h -t pending,running,suspended -o %i 2>/dev/null | xargs -r scancel || true
        for i in $(seq 1 20); do
            [[ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
    stop_pidfile slurmd "$DIR/run/slurmd.pid"
    stop_pidfile slurmctld "$DIR/run/slurmctld.pid"
    stop_pidfile munged "$MUNGE_DIR/munged.pid"
    unlink_system_conf
    if [[ "${MEMAUDIT_SLURM_KEEP:-0}" == "1" ]]; then
        log "kept $DIR"
    elif [[ -d "$DIR" ]]; then
        rm -rf -- "$DIR"
        log "removed $DIR"
    fi
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
