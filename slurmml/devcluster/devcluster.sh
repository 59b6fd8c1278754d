#!/usr/bin/env bash
# Slurm dev cluster on this one machine: munge, MariaDB, slurmdbd, slurmctld and one slurmd per node
# (Debian's Slurm is built with multiple-slurmd), with accounting (sacct) and placeholder GPUs:
#   node $HOST   64 CPUs, gpu:4   partitions gpu (default) and cpu
#   nodes n1,n2  16 CPUs, gpu:2   partition multi (jobs over several nodes), and the preemptible pair
#                                 low (PriorityTier=1, PreemptMode=REQUEUE, GraceTime) and high (PriorityTier=10)
#
#   devcluster.sh up      install if needed (Debian, root), write the configs, start what is
#                         not running, wait until the node is idle; a no-op when all runs
#   devcluster.sh down    stop what `up` started, in reverse order
#   devcluster.sh status  show each daemon and the node; exit 0 only when the cluster is up
#
# Works without systemd. Configs go to /etc/slurm (where Debian's Slurm reads them); pid
# files, logs, the slurmctld/slurmd state and the record of what `up` started go to $STATE.
set -euo pipefail

CLUSTER=slurmml-dev
STATE=/var/lib/slurmml-devcluster
RUN=$STATE/run
LOG=$STATE/log
RECORD=$STATE/started
CONF_DIR=/etc/slurm
SLURM_CONF_FILE=$CONF_DIR/slurm.conf
GRES_CONF=$CONF_DIR/gres.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
DB_NAME=slurm_acct_db
DB_USER=slurm
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
MARK="# Written by slurmml devcluster.sh; \`devcluster.sh up\` overwrites changes."

NODE_CPUS=64
NODE_MEM=65536
NODE_GPUS=4
# The small nodes: several-node jobs and preemption (a high-tier job asking for a whole node preempts a low one).
EXTRA_NODES=(n1 n2)
EXTRA_CPUS=16
EXTRA_MEM=16384
EXTRA_GPUS=2
EXTRA_PORT0=17001
GRACE_S=10
HOSTS_MARK="# slurmml devcluster nodes"

export SLURM_CONF=$SLURM_CONF_FILE
unset SLURM_CLUSTERS || true
HOST=$(uname -n)
HOST=${HOST%%.*}
T0=$(date +%s%N)

say() { echo "devcluster: $*"; }
warn() { echo "devcluster: warning: $*" >&2; }
die() { echo "devcluster: error: $*" >&2; exit 1; }
elapsed() { local t; t=$(date +%s%N); printf '%d.%ds' $(((t - T0) / 1000000000)) $(((t - T0) / 100000000 % 10)); }

# Print the last lines of a log file, indented, to stderr (for error reports).
log_tail() {
    [ -r "$1" ] || return 0
    tail -n "${2:-5}" "$1" | sed 's/^/    /' >&2 || true
}
fail_with_log() { # message logfile
    echo "devcluster: error: $1; see $2" >&2
    log_tail "$2"
    exit 1
}

# ---------------------------------------------------------------------------- processes

# A node's slurmd is named slurmd@NODE here (its record, its pid file); its command is slurmd.
comms_of() { case $1 in mysqld) echo "mariadbd mysqld" ;; slurmd@*) echo slurmd ;; *) echo "$1" ;; esac; }
pidfile_of() {
    case $1 in
    munged) echo /run/munge/munged.pid ;;
    mysqld) echo /run/mysqld/mysqld.pid ;;
    slurmdbd | slurmctld | slurmd) echo "$RUN/$1.pid" ;;
    slurmd@*) echo "$RUN/slurmd-${1#slurmd@}.pid" ;;
    *) echo "" ;;
    esac
}
all_nodes() { echo "$HOST" "${EXTRA_NODES[@]}"; }
extra_node_range() { echo "n[1-${#EXTRA_NODES[@]}]"; }

# is_proc PID NAME: PID is a live (not zombie) process whose command is NAME.
is_proc() {
    local pid=$1 name=$2 comm st c
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    { read -r comm <"/proc/$pid/comm" && read -r _ _ st _ <"/proc/$pid/stat"; } 2>/dev/null || return 1
    [ "$st" != Z ] && [ "$st" != X ] || return 1
    for c in $(comms_of "$name"); do [ "$comm" = "$c" ] && return 0; done
    return 1
}

ppid_of() { awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# daemon_pid NAME: pid of the running daemon (pid file first, else by command name), or "".
daemon_pid() {
    local name=$1 f p d comm c
    f=$(pidfile_of "$name")
    if [ -n "$f" ] && [ -r "$f" ]; then
        { read -r p <"$f"; } 2>/dev/null || p=""
        if is_proc "${p:-x}" "$name"; then echo "$p"; return 0; fi
    fi
    if [[ $name == slurmd@* ]]; then # several slurmd run: find the one started with -N NODE
        for d in /proc/[0-9]*; do
            is_proc "${d#/proc/}" slurmd || continue
            if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qE -- "-N ${name#slurmd@}( |$)"; then
                echo "${d#/proc/}"
                return 0
            fi
        done
        echo ""
        return 0
    fi
    for d in /proc/[0-9]*; do
        { read -r comm <"$d/comm"; } 2>/dev/null || continue
        for c in $(comms_of "$name"); do
            if [ "$comm" = "$c" ] && is_proc "${d#/proc/}" "$name"; then echo "${d#/proc/}"; return 0; fi
        done
    done
    echo ""
}

# The record of what `up` started: lines "NAME PID".
record_get() { [ -r "$RECORD" ] && awk -v n="$1" '$1 == n {print $2}' "$RECORD" || true; }
record_set() {
    local tmp
    mkdir -p "$STATE"
    tmp=$(mktemp "$STATE/.started.XXXXXX")
    { [ -r "$RECORD" ] && awk -v n="$1" '$1 != n' "$RECORD"; echo "$1 $2"; } >"$tmp" || true
    chmod 644 "$tmp"
    mv -f "$tmp" "$RECORD"
}
record_del() {
    local tmp
    [ -r "$RECORD" ] || return 0
    tmp=$(mktemp "$STATE/.started.XXXXXX")
    awk -v n="$1" '$1 != n' "$RECORD" >"$tmp" || true
    chmod 644 "$tmp"
    mv -f "$tmp" "$RECORD"
}

# wait_gone PID NAME SECONDS: wait for the process to exit; SIGKILL it after SECONDS.
wait_gone() {
    local pid=$1 name=$2 secs=$3 i
    for ((i = 0; i < secs * 5; i++)); do
        is_proc "$pid" "$name" || return 0
        sleep 0.2
    done
    warn "$name (pid $pid) did not exit within ${secs}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
        is_proc "$pid" "$name" || return 0
        sleep 0.2
    done
    die "$name (pid $pid) is still running after SIGKILL"
}

stop_pid() { # NAME PID SECONDS
    say "stopping $1 (pid $2)"
    kill -TERM "$2" 2>/dev/null || true
    wait_gone "$2" "$1" "$3"
}

# retry SECONDS CMD...: run CMD every 0.2s until it succeeds; fail after SECONDS.
retry() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# --------------------------------------------------------------------------- checks

munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mysql_ok() { command -v mysqladmin >/dev/null && mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }
# dbd_query: ask slurmdbd for the clusters (fails when it does not answer); the answer is kept
# in CLUSTERS_OUT as "name|controlhost" lines, for cluster_listed.
CLUSTERS_OUT=""
dbd_query() { CLUSTERS_OUT=$(timeout 20 sacctmgr -nP show cluster format=cluster,controlhost 2>/dev/null); }
# (Output is captured before matching: `cmd | grep -q` can fail under pipefail via SIGPIPE.)
ctld_ok() { local out; out=$(timeout 20 scontrol ping 2>/dev/null) && [[ $out == *" is UP"* ]]; }
cluster_listed() { awk -F'|' -v c="$CLUSTER" '$1 == c {ok = 1} END {exit !ok}' <<<"$CLUSTERS_OUT"; }
cluster_registered() { awk -F'|' -v c="$CLUSTER" '$1 == c && $2 != "" {ok = 1} END {exit !ok}' <<<"$CLUSTERS_OUT"; }
registered_now() { dbd_query && cluster_registered; }
node_state() { timeout 20 sinfo -h -N -n "${1:-$HOST}" -o '%T' 2>/dev/null | sed -n 1p; }
node_reason() { timeout 20 sinfo -h -N -n "${1:-$HOST}" -o '%E' 2>/dev/null | sed -n 1p; }
node_ok() { case $(node_state "${1:-$HOST}") in idle | mixed | allocated | completing | planned) return 0 ;; *) return 1 ;; esac; }
# slurmd has registered: the node has a state and is not marked not-responding ("*").
node_responding() { case $(node_state "${1:-$HOST}") in "" | unknown | *'*') return 1 ;; *) return 0 ;; esac; }

# --------------------------------------------------------------------------- preflight

is_debian() {
    [ -r /etc/os-release ] || return 1
    local ID="" ID_LIKE=""
    # shellcheck disable=SC1091
    ID=$(. /etc/os-release && echo "${ID:-}")
    ID_LIKE=$(. /etc/os-release && echo "${ID_LIKE:-}")
    { [ "$ID" = debian ] || [[ " $ID_LIKE " == *" debian "* ]]; } &&
        command -v apt-get >/dev/null && command -v dpkg-query >/dev/null
}

preflight() { # ACTION
    if ! is_debian; then
        echo "devcluster: '$1' needs Debian (or a Debian derivative) with apt-get and dpkg; this machine is not one." >&2
        echo "devcluster: nothing was done; use a Debian 12 machine or an existing Slurm cluster." >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "devcluster: '$1' must run as root (it installs packages and starts system daemons)." >&2
        echo "devcluster: nothing was done; try: sudo bash $0 $1" >&2
        exit 1
    fi
}

# One `up`/`down` at a time (test runners may call `up` from several processes at once).
# Everything started while holding it runs with fd 9 closed ("9>&-"): a daemon that inherited
# the descriptor would hold the lock for as long as it runs.
lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    if ! flock -n 9; then
        say "waiting for another 'devcluster.sh up/down' to finish"
        flock -w 600 9 || die "another 'devcluster.sh up/down' still holds $STATE/.lock after 600s"
    fi
}

missing_packages() {
    local installed p
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for p in "${PACKAGES[@]}"; do
        grep -qx "$p install ok installed" <<<"$installed" || echo "$p"
    done
}

install_packages() {
    local missing out policy_added=0
    missing=$(missing_packages | tr '\n' ' ')
    missing=${missing% }
    [ -z "$missing" ] && return 0
    say "installing $missing (about a minute)"
    if ! out=$(timeout 300 apt-get update 2>&1) || grep -qE '^(W|E): (Failed to fetch|Some index files failed)' <<<"$out"; then
        echo "devcluster: error: 'apt-get update' failed, so $missing cannot be installed (no network or no reachable Debian mirror?)" >&2
        grep -E '^(W|E):' <<<"$out" | head -n 3 | sed 's/^/    /' >&2 || true
        exit 1
    fi
    # Keep the packages' init scripts from starting daemons: `up` starts them itself.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    # shellcheck disable=SC2086
    if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y $missing 2>&1 9>&-); then
        [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
        echo "devcluster: error: 'apt-get install -y $missing' failed:" >&2
        tail -n 5 <<<"$out" | sed 's/^/    /' >&2
        exit 1
    fi
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    missing=$(missing_packages | tr '\n' ' ')
    [ -z "${missing// /}" ] || die "packages still missing after install: $missing"
    say "installed in $(elapsed)"
}

# ----------------------------------------------------------------------------- configs

gen_slurm_conf() {
    cat <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
# one slurmd per node (slurmd -N NODE): %n keeps their spool, pid and log apart
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
# No cgroups: plain process tracking.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# The node may declare more CPUs/memory than the machine has.
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=2
# A requeued job may start again only once its last credential has expired (cred_expire + 1 s, by default
# 121 s): 10 s keeps requeue and preemption tests short without forcing an early start, which slurmd
# refuses ("Job credential revoked") when it lands in the same second as the requeue.
AuthInfo=cred_expire=10
# Preemption by partition tier: a high-tier job takes the nodes of low-tier ones, which get their --signal at
# once (the warning slurmml requeues on), TERM after GraceTime, and are requeued (sacct: PREEMPTED).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
MinJobAge=300
MaxJobCount=50000
MaxArraySize=10001
# Many small jobs share the node; start them quickly.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,default_queue_depth=1000,bf_interval=1,bf_continue,bf_max_job_test=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
# Accounting through slurmdbd, so sacct works; GPUs show in AllocTRES.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
# Poll every 10s (default 30s); steps that end before the first poll have no MaxRSS in sacct.
JobAcctGatherFrequency=10
# no cgroups here: kill jobs over their requested memory from the accounting samples (OUT_OF_MEMORY)
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 Port=6818 CPUs=$NODE_CPUS Sockets=1 CoresPerSocket=$NODE_CPUS ThreadsPerCore=1 RealMemory=$NODE_MEM Gres=gpu:$NODE_GPUS State=UNKNOWN
NodeName=$(extra_node_range) NodeHostName=$HOST NodeAddr=127.0.0.1 Port=[$EXTRA_PORT0-$((EXTRA_PORT0 + ${#EXTRA_NODES[@]} - 1))] CPUs=$EXTRA_CPUS Sockets=1 CoresPerSocket=$EXTRA_CPUS ThreadsPerCore=1 RealMemory=$EXTRA_MEM Gres=gpu:$EXTRA_GPUS State=UNKNOWN
PartitionName=gpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=cpu Nodes=$HOST MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=multi Nodes=$(extra_node_range) MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=low Nodes=$(extra_node_range) MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S
PartitionName=high Nodes=$(extra_node_range) MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
}

gen_gres_conf() {
    cat <<EOF
$MARK
# Placeholder files stand in for GPU devices (created by \`devcluster.sh up\`).
AutoDetect=off
NodeName=$HOST Name=gpu File=$STATE/gpu[0-$((NODE_GPUS - 1))]
EOF
    local node
    for node in "${EXTRA_NODES[@]}"; do
        echo "NodeName=$node Name=gpu File=$STATE/$node-gpu[0-$((EXTRA_GPUS - 1))]"
    done
}

gen_dbd_conf() { # PASSWORD
    cat <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$1
EOF
}

# install_file PATH MODE OWNER CONTENT: write the file when its content differs; sets
# CHANGED=1 when it wrote it, else CHANGED=0.
CHANGED=0
install_file() {
    local path=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$STATE/.conf.XXXXXX")
    printf '%s\n' "$4" >"$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chmod "$mode" "$path"
        chown "$owner" "$path"
        CHANGED=0
        return 0
    fi
    if [ -f "$path" ] && ! grep -qF "$MARK" "$path" && [ ! -e "$path.before-slurmml" ]; then
        cp -p "$path" "$path.before-slurmml"
        say "saved the existing $path as $path.before-slurmml"
    fi
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
    CHANGED=1
}

db_password() {
    local pw=""
    if [ -r "$DBD_CONF" ] && grep -qF "$MARK" "$DBD_CONF"; then
        pw=$(sed -n 's/^StoragePass=//p' "$DBD_CONF" | sed -n 1p)
    fi
    [ -n "$pw" ] || pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    echo "$pw"
}

prepare_dirs() {
    local i node
    mkdir -p "$STATE" "$CONF_DIR"
    chmod 755 "$STATE"
    install -d -m 755 -o slurm -g slurm "$RUN" "$LOG" "$STATE/slurmctld"
    install -d -m 755 "$STATE/slurmd"
    for node in $(all_nodes); do install -d -m 755 "$STATE/slurmd/$node"; done
    # Placeholder GPU devices: character devices like /dev/null (slurmd logs an error for
    # plain files, though it accepts them); plain files where mknod is not allowed.
    local devices=()
    for ((i = 0; i < NODE_GPUS; i++)); do devices+=("gpu$i"); done
    for node in "${EXTRA_NODES[@]}"; do
        for ((i = 0; i < EXTRA_GPUS; i++)); do devices+=("$node-gpu$i"); done
    done
    for i in "${devices[@]}"; do
        [ -c "$STATE/$i" ] && continue
        rm -f "$STATE/$i"
        mknod -m 666 "$STATE/$i" c 1 3 2>/dev/null || : >"$STATE/$i"
    done
    install -d -m 755 -o munge -g munge /run/munge
    install -d -m 700 -o munge -g munge /var/log/munge /var/lib/munge
    install -d -m 755 -o mysql -g mysql /run/mysqld
    [ -e "$LOG/mysqld.log" ] || install -m 640 -o mysql -g mysql /dev/null "$LOG/mysqld.log"
}

# ----------------------------------------------------------------------------- start

start_munged() {
    if munge_ok; then return 0; fi
    local pid
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        install -d -m 700 -o munge -g munge /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 600 /etc/munge/munge.key
    fi
    say "starting munged"
    (cd / && runuser -u munge -- /usr/sbin/munged </dev/null >"$LOG/munged.start" 2>&1 9>&-) ||
        fail_with_log "munged failed to start" "$LOG/munged.start"
    retry 15 munge_ok || fail_with_log "munged does not answer after 15s" /var/log/munge/munged.log
    pid=$(daemon_pid munged)
    record_set munged "${pid:-?}"
    DID=1
}

start_mysqld() {
    if mysql_ok; then return 0; fi
    local safe_pid pid
    if [ ! -d /var/lib/mysql/mysql ]; then
        say "initialising the MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mysqld-install.log" 2>&1 9>&- ||
            fail_with_log "mariadb-install-db failed" "$LOG/mysqld-install.log"
    fi
    say "starting mysqld (MariaDB)"
    (cd / && exec setsid mysqld_safe --skip-syslog --log-error="$LOG/mysqld.log" \
        --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900 </dev/null >"$LOG/mysqld_safe.out" 2>&1) 9>&- &
    safe_pid=$!
    local i
    for ((i = 0; i < 10; i++)); do is_proc "$safe_pid" mysqld_safe && break; sleep 0.1; done
    is_proc "$safe_pid" mysqld_safe || safe_pid=$(daemon_pid mysqld_safe)
    record_set mysqld_safe "${safe_pid:-?}"
    for ((i = 0; i < 300; i++)); do
        mysql_ok && break
        if [ -n "$safe_pid" ] && ! is_proc "$safe_pid" mysqld_safe; then
            fail_with_log "mysqld_safe exited before MariaDB accepted connections" "$LOG/mysqld.log"
        fi
        sleep 0.2
    done
    mysql_ok || fail_with_log "MariaDB does not accept connections after 60s" "$LOG/mysqld.log"
    pid=$(daemon_pid mysqld)
    record_set mysqld "${pid:-?}"
    DID=1
}

setup_db() { # PASSWORD
    local out
    if ! out=$(mariadb --connect-timeout=5 -e "
        CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$1';
        ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$1';
        GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
        FLUSH PRIVILEGES;" 2>&1); then
        echo "devcluster: error: cannot create the accounting database user in MariaDB as root:" >&2
        echo "    $out" >&2
        exit 1
    fi
}

start_slurm_daemon() { # NAME READY_CHECK SECONDS
    local name=$1 check=$2 secs=$3 pid
    say "starting $name"
    (cd / && "/usr/sbin/$name" </dev/null >"$LOG/$name.start" 2>&1 9>&-) || {
        cat "$LOG/$name.start" >>"$LOG/$name.log" 2>/dev/null || true
        fail_with_log "$name failed to start" "$LOG/$name.log"
    }
    retry "$secs" "$check" || fail_with_log "$name is not ready after ${secs}s" "$LOG/$name.log"
    pid=$(daemon_pid "$name")
    record_set "$name" "${pid:-?}"
    DID=1
}

# start_slurmd NODE: this node's slurmd (multiple-slurmd: `slurmd -N NODE`, its own port from slurm.conf).
start_slurmd() {
    local node=$1 pid
    say "starting slurmd for node $node"
    (cd / && /usr/sbin/slurmd -N "$node" </dev/null >"$LOG/slurmd-$node.start" 2>&1 9>&-) || {
        cat "$LOG/slurmd-$node.start" >>"$LOG/slurmd-$node.log" 2>/dev/null || true
        fail_with_log "slurmd for node $node failed to start" "$LOG/slurmd-$node.log"
    }
    retry 60 node_responding "$node" || fail_with_log "slurmd for node $node is not ready after 60s" "$LOG/slurmd-$node.log"
    pid=$(daemon_pid "slurmd@$node")
    record_set "slurmd@$node" "${pid:-?}"
    DID=1
}

# The extra nodes' names must resolve (there is no nss-myhostname here): they all live at 127.0.0.1.
ensure_hosts() {
    local node missing=()
    for node in "${EXTRA_NODES[@]}"; do getent hosts "$node" >/dev/null || missing+=("$node"); done
    [ ${#missing[@]} = 0 ] && return 0
    say "adding ${missing[*]} to /etc/hosts (127.0.0.1)"
    echo "127.0.0.1 ${missing[*]} $HOSTS_MARK" >>/etc/hosts
}

# Every slurmd: one per node, and the single one an older devcluster.sh started.
stop_slurmds() {
    local node
    for node in $(all_nodes); do stop_daemon_for_restart "slurmd@$node"; done
    [ -z "$(record_get slurmd)" ] || stop_daemon_for_restart slurmd
}

stop_daemon_for_restart() { # NAME
    local pid
    pid=$(daemon_pid "$1")
    [ -n "$pid" ] && stop_pid "$1" "$pid" 30
    record_del "$1"
}

wait_node() { # NODE
    local node=$1 st i resumed=0 reason
    for ((i = 0; i < 300; i++)); do
        st=$(node_state "$node")
        case $st in
        idle | mixed | allocated | completing | planned) return 0 ;;
        inval | *'*' | unknown | "") ;; # not (yet) registered / not responding
        down | drain* | drained | fail*)
            if [ "$resumed" = 0 ]; then
                reason=$(node_reason "$node")
                say "node $node is $st (${reason:-no reason given}); resuming it"
                timeout 20 scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                resumed=1
                DID=1
            fi
            ;;
        esac
        # An INVAL node is a configuration mismatch; give slurmd a moment to re-register.
        if [ "$st" = inval ] && [ "$i" -ge 50 ]; then break; fi
        sleep 0.2
    done
    reason=$(node_reason "$node")
    echo "devcluster: error: node $node is '${st:-not known to slurmctld}', not idle (reason: ${reason:-none given}); see $LOG/slurmd-$node.log and $LOG/slurmctld.log" >&2
    log_tail "$LOG/slurmd-$node.log" 3
    log_tail "$LOG/slurmctld.log" 3
    exit 1
}

do_up() {
    preflight up
    lock
    install_packages
    DID=0
    prepare_dirs
    ensure_hosts

    local pw slurm_changed=0 gres_changed=0 dbd_changed=0
    pw=$(db_password)
    install_file "$SLURM_CONF_FILE" 644 root:root "$(gen_slurm_conf)"
    slurm_changed=$CHANGED
    install_file "$GRES_CONF" 644 root:root "$(gen_gres_conf)"
    gres_changed=$CHANGED
    install_file "$DBD_CONF" 600 slurm:slurm "$(gen_dbd_conf "$pw")"
    dbd_changed=$CHANGED

    start_munged
    start_mysqld

    if [ -n "$(daemon_pid slurmdbd)" ] && [ "$dbd_changed" = 1 ]; then
        say "slurmdbd.conf changed; restarting slurmdbd"
        stop_daemon_for_restart slurmdbd
    fi
    if [ -z "$(daemon_pid slurmdbd)" ]; then
        setup_db "$pw"
        start_slurm_daemon slurmdbd dbd_query 60
    elif ! retry 10 dbd_query; then
        fail_with_log "slurmdbd runs but does not answer sacctmgr" "$LOG/slurmdbd.log"
    fi

    if ! cluster_listed; then
        say "adding cluster $CLUSTER to the accounting database"
        local out
        out=$(timeout 30 sacctmgr -i add cluster "$CLUSTER" 2>&1) || { dbd_query && cluster_listed; } ||
            { echo "devcluster: error: sacctmgr -i add cluster $CLUSTER failed: $out" >&2; exit 1; }
        DID=1
    fi

    if [ "$slurm_changed" = 1 ] || [ "$gres_changed" = 1 ]; then
        if [ -n "$(daemon_pid slurmctld)" ] || [ -n "$(daemon_pid slurmd)" ]; then
            say "slurm.conf/gres.conf changed; restarting slurmctld and every slurmd"
            stop_slurmds
            stop_daemon_for_restart slurmctld
        fi
    fi
    [ -n "$(daemon_pid slurmctld)" ] || start_slurm_daemon slurmctld ctld_ok 60
    local node
    for node in $(all_nodes); do
        [ -n "$(daemon_pid "slurmd@$node")" ] || start_slurmd "$node"
    done
    for node in $(all_nodes); do wait_node "$node"; done
    { [ "$DID" = 0 ] && cluster_registered; } || retry 30 registered_now ||
        fail_with_log "slurmctld did not register cluster $CLUSTER with slurmdbd within 30s" "$LOG/slurmctld.log"

    if [ "$DID" = 0 ]; then
        say "already up: cluster $CLUSTER, nodes $(all_nodes | tr ' ' ','); nothing to do ($(elapsed))"
    else
        say "up in $(elapsed): cluster $CLUSTER, node $HOST ($NODE_CPUS CPUs, ${NODE_MEM} MB, gpu:$NODE_GPUS) $(node_state), nodes $(extra_node_range) ($EXTRA_CPUS CPUs, ${EXTRA_MEM} MB, gpu:$EXTRA_GPUS each); partitions gpu (default), cpu on $HOST, multi, low, high on $(extra_node_range); logs in $LOG"
    fi
}

# ------------------------------------------------------------------------------ down

do_down() {
    preflight down
    lock
    if [ ! -s "$RECORD" ]; then
        say "nothing to stop: no daemons started by 'devcluster.sh up' are recorded"
        return 0
    fi
    local name pid safe
    for name in $(for node in $(all_nodes); do echo "slurmd@$node"; done) slurmd slurmctld slurmdbd; do
        pid=$(record_get "$name")
        [ -n "$pid" ] || continue
        if is_proc "$pid" "$name"; then
            stop_pid "$name" "$pid" 30
        else
            say "$name (pid $pid) is not running"
        fi
        record_del "$name"
    done
    # MariaDB: mysqld runs under mysqld_safe, which may have restarted it with a new pid.
    safe=$(record_get mysqld_safe)
    pid=$(record_get mysqld)
    if [ -n "$safe$pid" ]; then
        if ! is_proc "${pid:-x}" mysqld && [ -n "$safe" ] && is_proc "$safe" mysqld_safe; then
            pid=$(daemon_pid mysqld)
            [ -n "$pid" ] && [ "$(ppid_of "$pid")" = "$safe" ] || pid=""
        fi
        if [ -n "$pid" ] && is_proc "$pid" mysqld; then
            stop_pid mysqld "$pid" 60
        else
            say "mysqld is not running"
        fi
        if [ -n "$safe" ] && is_proc "$safe" mysqld_safe; then
            local i
            for ((i = 0; i < 25; i++)); do is_proc "$safe" mysqld_safe || break; sleep 0.2; done
            is_proc "$safe" mysqld_safe && stop_pid mysqld_safe "$safe" 10
        fi
        record_del mysqld
        record_del mysqld_safe
    fi
    pid=$(record_get munged)
    if [ -n "$pid" ]; then
        if is_proc "$pid" munged; then stop_pid munged "$pid" 15; else say "munged (pid $pid) is not running"; fi
        record_del munged
    fi
    for name in munged mysqld; do
        pid=$(daemon_pid "$name")
        [ -z "$pid" ] || say "leaving $name (pid $pid) running: 'devcluster.sh up' did not start it"
    done
    rm -f "$RECORD"
    say "down in $(elapsed)"
}

# ---------------------------------------------------------------------------- status

do_status() {
    if ! command -v slurmctld >/dev/null || ! command -v sinfo >/dev/null; then
        say "not installed: Slurm is missing here (on Debian, as root: devcluster.sh up)"
        return 1
    fi
    local ok=0 name pid started st reason node
    for name in munged mysqld slurmdbd slurmctld $(for node in $(all_nodes); do echo "slurmd@$node"; done); do
        pid=$(daemon_pid "$name")
        if [ -n "$pid" ]; then
            started=""
            [ -n "$(record_get "$name")" ] || started=" (not started by devcluster)"
            printf 'devcluster: %-10s running, pid %s%s\n' "$name" "$pid" "$started"
        else
            printf 'devcluster: %-10s not running\n' "$name"
            ok=1
        fi
    done
    munge_ok || { say "munge does not answer"; ok=1; }
    if [ -n "$(daemon_pid slurmctld)" ]; then
        for node in $(all_nodes); do
            st=$(node_state "$node")
            reason=$(node_reason "$node")
            [ "$reason" = none ] && reason=""
            say "node $node: ${st:-unknown}${reason:+ ($reason)}"
            node_ok "$node" || ok=1
        done
        say "partitions: $(timeout 20 sinfo -h -o '%P' 2>/dev/null | tr '\n' ' ' | sed 's/ $//')"
    else
        say "node $HOST: unknown (slurmctld is not running)"
        ok=1
    fi
    if [ "$ok" = 0 ]; then say "cluster $CLUSTER is up"; else say "cluster $CLUSTER is not (fully) up"; fi
    return "$ok"
}

case ${1:-} in
up) do_up ;;
down) do_down ;;
status) do_status ;;
*)
    echo "usage: $(basename "$0") up|down|status" >&2
    exit 2
    ;;
esac
