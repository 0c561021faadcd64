# Sourced by kafka/broker.sh and connect/worker.sh: the background Java process each of them
# runs, known by its pid file and its port. Each script defines `say` and sets PID_FILE and PORT
# before it calls these.

# Whether process $1 runs. A process that exited but whose parent does not reap it (the shell
# that started it is gone, and PID 1 in a container may not reap) stays a zombie: dead all the same.
alive() {
  kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]]
}

# The pid in PID_FILE, when that process runs.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  alive "$pid" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# SIGTERM to the process in PID_FILE, SIGKILL after $1 seconds, then wait until PORT is free.
# `$2` says what SIGTERM does for it, in the log line.
stop_running() {
  local grace="$1" pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    say "not running"
    return 0
  fi
  say "stopping (pid $pid)"
  kill -TERM "$pid"
  local waited=0
  while alive "$pid"; do
    if (( waited == grace * 10 )); then
      say "no exit $grace s after SIGTERM; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
    waited=$(( waited + 1 ))
  done
  rm -f "$PID_FILE"
  while port_open "$PORT"; do sleep 0.1; done
  say "stopped; port $PORT is free"
}
