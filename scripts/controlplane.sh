#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd, kube-apiserver (RBAC on),
# kube-controller-manager and kube-scheduler; no kubelet (a VM guest can be the node:
# scripts/vm-node).
#
#   controlplane.sh start [--holder PID]   start (or reuse a healthy running) control plane
#   controlplane.sh release PID            drop PID's hold; stop when no live holder is left
#   controlplane.sh stop                   stop what this script started (pidfiles), holders or not
#   controlplane.sh status                 exit 0 when /readyz answers ok
#   controlplane.sh env                    print `export KUBECONFIG=...` for a shell
#
# Several test sessions (and the VM tests' guest) share one control plane, so `start` is
# idempotent and reuses a healthy one, and test sessions take a hold (--holder, their pid)
# that `release` drops: the last live holder stops it. A start without --holder takes a
# "manual" hold that only `stop` clears. A fresh start wipes etcd's data so every new
# control plane begins empty. The servers do not inherit the lock's descriptor (9>&-), or
# they would hold the lock for their whole life.
#
# Everything lives in ${DAMON_K8S_CACHE:-~/.cache/damon-k8s}/controlplane: certificates
# (openssl; the serving cert names 127.0.0.1, 10.0.2.2 — the QEMU guest's view of the host
# — and the in-cluster service names), the admin token, etcd's data, logs, pidfiles and the
# kubeconfigs. Servers are started with setsid so they outlive the starting shell.
#
# Identities, as RBAC's bootstrap roles expect them: `admin` (tokens.csv, group
# system:masters: the kubeconfig tests use); client certificates signed by the test CA
# for system:kube-controller-manager and system:kube-scheduler (their kubeconfigs) and
# for system:node:damon-vm in group system:nodes, bound here to the ClusterRole
# system:node (no Node authorizer runs): node.kubeconfig, which names the apiserver as a
# VM guest reaches it (https://10.0.2.2:6443), is a kubelet's. tokens.csv keeps its one
# line: checkouts of other revisions share this directory and read its first field.
# The controller-manager signs ServiceAccount tokens with the key the apiserver verifies
# them with (pki/sa.key, sa.pub) and runs each controller as its own ServiceAccount.
set -euo pipefail

cache=${DAMON_K8S_CACHE:-$HOME/.cache/damon-k8s}
version=${DAMON_APISERVER_VERSION:-1.20.2}
apiserver_bin=${DAMON_APISERVER_BIN:-$cache/kube-apiserver-$version}
controller_manager_bin=${DAMON_CONTROLLER_MANAGER_BIN:-$cache/kube-controller-manager-$version}
scheduler_bin=${DAMON_SCHEDULER_BIN:-$cache/kube-scheduler-$version}
dir="$cache/controlplane"
pki="$dir/pki"
holders="$dir/holders"
kubeconfig="$dir/kubeconfig"
etcd_port=2379
api_port=6443
api_url="https://127.0.0.1:$api_port"
guest_api_url="https://10.0.2.2:$api_port"
controller_manager_port=10257
scheduler_port=10259
node_user=system:node:damon-vm
# Tests make Node objects no kubelet runs (the controller-manager marks them unreachable
# after 40 s) and bind pods to them, and a VM guest may wait minutes for its boot: pods
# tolerate an unready or unreachable node for an hour, not the default 5 minutes, before
# they are evicted.
eviction_s=3600
ready_timeout=${DAMON_CONTROLPLANE_TIMEOUT:-120}

log() { echo "controlplane: $*" >&2; }
die() { log "$*"; exit 1; }

alive() {  # alive PIDFILE NAME: the pid in PIDFILE runs a process whose command names NAME
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

token() { head -n 1 "$dir/tokens.csv" | cut -d, -f1; }

api_ready() {
    [ -s "$dir/tokens.csv" ] || return 1
    [ "$(curl -s --max-time 3 --cacert "$pki/ca.crt" -H "Authorization: Bearer $(token)" \
        "$api_url/readyz" 2>/dev/null)" = ok ]
}

wait_api_ready() {  # wait_api_ready SECONDS: /readyz answers ok within SECONDS
    local deadline=$(( $(date +%s) + $1 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        api_ready && return 0
        alive "$dir/apiserver.pid" kube-apiserver || return 1
        sleep 1
    done
    api_ready
}

stop_pid() {  # stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 $(( $2 * 5 ))); do [ -d "/proc/$1" ] || return 0; sleep 0.2; done
    kill -9 "$1" 2>/dev/null || true
    for _ in $(seq 1 25); do [ -d "/proc/$1" ] || return 0; sleep 0.2; done
}

etcd_healthy() {
    curl -s --max-time 3 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'
}

make_pki() {
    mkdir -p "$pki"
    [ -s "$pki/ca.crt" ] && [ -s "$pki/apiserver.crt" ] && [ -s "$pki/sa.key" ] && return 0
    log "generating certificates and keys in $pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=damon-k8s-test-ca" \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    cat >"$pki/apiserver.ext" <<'EOF'
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:10.0.2.2, IP:10.0.0.1, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
EOF
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

client_cert() {  # client_cert NAME SUBJECT: pki/NAME.{crt,key}, a client certificate of the CA
    [ -s "$pki/$1.crt" ] && [ -s "$pki/$1.key" ] && return 0
    printf 'basicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n' \
        >"$pki/client.ext"
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key.tmp" \
        -out "$pki/$1.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -extfile "$pki/client.ext" -out "$pki/$1.crt.tmp" 2>/dev/null
    chmod 600 "$pki/$1.key.tmp"
    mv "$pki/$1.key.tmp" "$pki/$1.key"
    mv "$pki/$1.crt.tmp" "$pki/$1.crt"
}

make_client_certs() {
    client_cert controller-manager "/CN=system:kube-controller-manager"
    client_cert scheduler "/CN=system:kube-scheduler"
    client_cert node "/O=system:nodes/CN=$node_user"
}

write_kubeconfig() {  # write_kubeconfig PATH SERVER USER CREDENTIALS (the user's YAML lines)
    local ca_data
    ca_data=$(base64 -w0 <"$pki/ca.crt")
    (
        umask 077
        cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: damon-k8s-test
  cluster:
    server: $2
    certificate-authority-data: $ca_data
users:
- name: $3
  user:
$4
contexts:
- name: damon-k8s-test
  context: {cluster: damon-k8s-test, user: $3}
current-context: damon-k8s-test
EOF
    )
    mv "$1.tmp" "$1"
}

write_credentials() {
    if [ ! -s "$dir/tokens.csv" ]; then
        printf '%s,admin,admin,system:masters\n' "$(openssl rand -hex 24)" >"$dir/tokens.csv"
        chmod 600 "$dir/tokens.csv"
    fi
    write_kubeconfig "$kubeconfig" "$api_url" admin "    token: $(token)"
    make_client_certs
    local name server
    for name in controller-manager scheduler node; do
        server=$api_url
        [ "$name" = node ] && server=$guest_api_url
        write_kubeconfig "$dir/$name.kubeconfig" "$server" "$name" \
            "    client-certificate-data: $(base64 -w0 <"$pki/$name.crt")
    client-key-data: $(base64 -w0 <"$pki/$name.key")"
    done
}

# Kubelets authenticate as users of group system:nodes; without the Node authorizer RBAC
# grants them the ClusterRole system:node through this binding (what the Node authorizer
# would allow a kubelet, and more: any node's objects).
bind_nodes() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$pki/ca.crt" \
        -H "Authorization: Bearer $(token)" -H 'Content-Type: application/json' \
        -X POST "$api_url/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" -d '{
          "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
          "metadata": {"name": "damon-k8s:nodes"},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
          "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}')
    case $code in
        201|409) ;;
        *) die "could not bind group system:nodes to ClusterRole system:node (HTTP $code)" ;;
    esac
}

start_etcd() {
    if etcd_healthy; then
        alive "$dir/etcd.pid" etcd || log "reusing an etcd on :$etcd_port this script did not start"
        return 0
    fi
    rm -rf "$dir/etcd-data"
    log "starting etcd on 127.0.0.1:$etcd_port"
    setsid etcd --name damon-k8s-test --data-dir "$dir/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:2380" \
        --initial-advertise-peer-urls "http://127.0.0.1:2380" \
        --initial-cluster "damon-k8s-test=http://127.0.0.1:2380" \
        --log-level warn >"$dir/etcd.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/etcd.pid"
    for _ in $(seq 1 100); do
        etcd_healthy && return 0
        alive "$dir/etcd.pid" etcd || die "etcd exited; see $dir/etcd.log: $(tail -n 5 "$dir/etcd.log")"
        sleep 0.2
    done
    die "etcd did not become healthy in 20 s; see $dir/etcd.log"
}

start_apiserver() {
    [ -x "$apiserver_bin" ] || die "no kube-apiserver binary at $apiserver_bin: run scripts/build-apiserver.sh (or make test) first"
    log "starting kube-apiserver on $api_url"
    setsid "$apiserver_bin" \
        --etcd-servers="http://127.0.0.1:$etcd_port" \
        --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=10.0.0.1 \
        --insecure-port=0 --cert-dir="$dir/certs" \
        --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
        --client-ca-file="$pki/ca.crt" \
        --token-auth-file="$dir/tokens.csv" --authorization-mode=RBAC \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true \
        --default-not-ready-toleration-seconds="$eviction_s" \
        --default-unreachable-toleration-seconds="$eviction_s" \
        >"$dir/apiserver.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/apiserver.pid"
    local deadline=$(( $(date +%s) + ready_timeout ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        api_ready && { log "ready: $api_url (kubeconfig $kubeconfig)"; return 0; }
        alive "$dir/apiserver.pid" kube-apiserver \
            || die "kube-apiserver exited; see $dir/apiserver.log: $(tail -n 5 "$dir/apiserver.log")"
        sleep 0.5
    done
    die "kube-apiserver did not answer /readyz within $ready_timeout s; see $dir/apiserver.log"
}

component_healthy() {  # component_healthy PORT: its /healthz answers ok
    [ "$(curl -sk --max-time 3 "https://127.0.0.1:$1/healthz" 2>/dev/null)" = ok ]
}

start_component() {  # start_component NAME BINARY PORT ARGS...: start it unless running
    local name=$1 binary=$2 port=$3
    shift 3
    if alive "$dir/$name.pid" "kube-$name"; then
        component_healthy "$port" && return 0
        log "kube-$name is running but not healthy; restarting it"
        stop_pid "$(cat "$dir/$name.pid")" 20
    fi
    [ -x "$binary" ] || die "no kube-$name binary at $binary: run scripts/build-apiserver.sh (or make test) first"
    log "starting kube-$name (https://127.0.0.1:$port)"
    setsid "$binary" --kubeconfig="$dir/$name.kubeconfig" \
        --authentication-kubeconfig="$dir/$name.kubeconfig" \
        --authorization-kubeconfig="$dir/$name.kubeconfig" \
        --bind-address=127.0.0.1 --secure-port="$port" --port=0 --leader-elect=false \
        "$@" >"$dir/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/$name.pid"
    local deadline=$(( $(date +%s) + ready_timeout ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        component_healthy "$port" && return 0
        alive "$dir/$name.pid" "kube-$name" \
            || die "kube-$name exited; see $dir/$name.log: $(tail -n 5 "$dir/$name.log")"
        sleep 0.5
    done
    die "kube-$name did not answer /healthz within $ready_timeout s; see $dir/$name.log"
}

# Without these no Deployment or DaemonSet becomes a pod, no ServiceAccount gets its token
# and no namespace is ever emptied. Leader election is off: one of each runs per machine
# (the start lock), and a restart need not wait out a dead leader's lease.
start_components() {
    bind_nodes
    start_component controller-manager "$controller_manager_bin" "$controller_manager_port" \
        --cert-dir="$dir/controller-manager-certs" \
        --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key"
    start_component scheduler "$scheduler_bin" "$scheduler_port" \
        --cert-dir="$dir/scheduler-certs"
}

hold() {  # hold NAME: record a holder (a pid, or "manual")
    mkdir -p "$holders"
    : >"$holders/$1"
}

live_holders() {
    local h n=0
    for h in "$holders"/*; do
        [ -e "$h" ] || continue
        h=$(basename "$h")
        if [ "$h" = manual ] || [ -d "/proc/$h" ]; then n=$((n + 1)); else rm -f "$holders/$h"; fi
    done
    echo "$n"
}

stop_servers() {
    local name pid
    for name in scheduler controller-manager apiserver etcd; do
        if alive "$dir/$name.pid" "$( [ $name = etcd ] && echo etcd || echo "kube-$name" )"; then
            pid=$(cat "$dir/$name.pid")
            log "stopping $name (pid $pid)"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
            [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
    rm -rf "$holders"
}

cmd=${1:-}
shift || true
mkdir -p "$dir"
case "$cmd" in
start)
    holder=manual
    if [ "${1:-}" = --holder ]; then holder=${2:?--holder needs a pid}; fi
    exec 9>"$dir/start.lock"
    flock 9
    make_pki
    write_credentials
    if api_ready; then
        log "reusing the running control plane at $api_url"
    else
        start_etcd
        # An apiserver still starting on a loaded machine (an emulated guest on every core)
        # gets the rest of its start time; an older one that does not answer (frozen,
        # stopping) is stopped, and gone (it lets go of its port last) before another starts.
        if alive "$dir/apiserver.pid" kube-apiserver; then
            pid=$(cat "$dir/apiserver.pid")
            age=$(ps -o etimes= -p "$pid" | tr -d ' ')
            if [ "${age:-$ready_timeout}" -ge "$ready_timeout" ] \
                || ! wait_api_ready $(( ready_timeout - age )); then
                log "kube-apiserver (pid $pid, up ${age:-?} s) is running but not ready; restarting it"
                stop_pid "$pid" 60
            fi
        fi
        api_ready || start_apiserver
    fi
    start_components
    hold "$holder"
    echo "$kubeconfig"
    ;;
release)
    holder=${1:?release needs the holder pid}
    exec 9>"$dir/start.lock"
    flock 9
    rm -f "$holders/$holder"
    if [ "$(live_holders)" -eq 0 ]; then stop_servers; else log "still held; left running"; fi
    ;;
stop)
    exec 9>"$dir/start.lock"
    flock 9
    stop_servers
    ;;
status)
    if api_ready; then echo "ready: $api_url (kubeconfig $kubeconfig)"; else echo "not running"; exit 1; fi
    ;;
env)
    echo "export KUBECONFIG=$kubeconfig"
    ;;
*)
    echo "usage: $0 start [--holder PID] | release PID | stop | status | env" >&2
    exit 2
    ;;
esac
