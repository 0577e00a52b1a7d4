#!/usr/bin/env bash
# Run the project's Snakemake from .venv (call it from the project root, or pass -s/--directory).
#
# Locks. Snakemake locks its working directory (.snakemake/locks) while it runs; a run killed hard
# (SIGKILL, power loss) leaves that lock behind. This script records each run it starts in
# .snakemake/fiveflow-lock-owner (host, PID and process start time of this script and of its
# Snakemake) and forgets it at the end, unless Snakemake failed and left a lock. When locks exist at
# start, they are stale, and removed with a one-line notice so a rerun needs no manual cleanup, only when
#   - the owner record exists and every process it names is gone (PID dead, or reused by another
#     process: its start time differs), and
#   - no process working in that directory runs Snakemake, however it was started
#     (bin/snakemake, python -m snakemake, python .../snakemake, ...).
# Otherwise (a live run, a run on another host, or a lock made by a Snakemake not started through this
# script) the lock stays: one line says so and how to release it (`tools/snakemake.sh --unlock`, same
# arguments), and Snakemake itself reports the lock.
# Snakemake runs as a child: TERM and INT sent to this script are passed on to it (INT not while the
# script runs in the foreground of a terminal: Ctrl-C reaches Snakemake there directly, and a second
# INT could cut its shutdown short). Interrupted jobs are redone (--rerun-incomplete, set in
# profiles/default/config.yaml), and every stage writes its outputs atomically.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
export PATH="$root/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
workdir=$PWD
unlock=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -d|--directory) workdir=${args[$((i + 1))]:-$workdir} ;;
    --directory=*) workdir=${args[$i]#--directory=} ;;
    --unlock) unlock=1 ;;
  esac
done
workdir=$(cd "$workdir" 2>/dev/null && pwd -P || echo "$workdir")
smkdir="$workdir/.snakemake"
owner="$smkdir/fiveflow-lock-owner"
host=${HOSTNAME:-$(uname -n)}

# Start time of process $1 (clock ticks after boot, /proc/PID/stat field 22); empty when it is gone.
proc_start() {
  local s f
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }  # the fields after the command name (which may hold spaces and parentheses)
  read -ra f <<<"$s"
  [[ ${f[0]} == Z || ${f[0]} == X ]] || echo "${f[19]}"  # a zombie has ended
}

# Every process of the owner record has ended (false without a record, or for another host's run).
owner_gone() {
  local h pid start
  [[ -s $owner && -d /proc/self ]] || return 1
  while read -r h pid start; do
    [[ $h == "$host" && -n $pid && -n $start ]] || return 1
    [[ "$(proc_start "$pid")" != "$start" ]] || return 1
  done <"$owner"
}

# A process working in $workdir runs Snakemake: an argument named snakemake (bin/snakemake,
# python -m snakemake, python .../snakemake) or a module snakemake.* after -m.
snakemake_here() {
  local d cwd a prev
  for d in /proc/[0-9]*; do
    [[ ${d#/proc/} == "$$" ]] && continue
    cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
    [[ $cwd == "$workdir" ]] || continue
    prev=
    while IFS= read -r -d '' a; do
      case "${a##*/}" in
        snakemake|-msnakemake|-msnakemake.*) return 0 ;;
        snakemake.*) [[ $prev == -m ]] && return 0 ;;
      esac
      prev=$a
    done 2>/dev/null <"$d/cmdline" || true
  done
  return 1
}

if [[ $unlock == 0 ]] && compgen -G "$smkdir/locks/*" >/dev/null; then
  if owner_gone && ! snakemake_here; then
    echo "[fiveflow] removing a stale Snakemake lock left by an interrupted run in $workdir" >&2
    rm -f "$smkdir"/locks/* "$owner"
  else
    if [[ -s $owner ]]; then why="a run may be active there"; else
      why="it was not made by a run of tools/snakemake.sh, so it is not removed automatically"; fi
    echo "[fiveflow] a Snakemake lock exists in $workdir ($why); if no other run is active there, run" \
      "\`tools/snakemake.sh --unlock\` (same arguments), then rerun" >&2
  fi
fi

# Record this run before Snakemake can take a lock.
made=()
for d in "$workdir" "$smkdir"; do
  [[ -d $d ]] || { mkdir "$d" 2>/dev/null && made=("$d" "${made[@]}"); } || true
done
{ echo "$host $$ $(proc_start $$)" >>"$owner"; } 2>/dev/null || true
child=
cleanup() {
  local locked=0 keep=() h pid start
  compgen -G "$smkdir/locks/*" >/dev/null && locked=1
  while read -r h pid start; do
    if [[ $h == "$host" && ($pid == "$$" || $pid == "$child") ]]; then
      # this run: forgotten, unless Snakemake failed with a lock left (the next run checks this run is gone)
      [[ $locked == 1 && ${smk_rc:-1} != 0 ]] && keep+=("$h $pid $start")
    elif [[ $locked == 1 || $h != "$host" || "$(proc_start "$pid")" == "$start" ]]; then
      keep+=("$h $pid $start")  # another run: kept while it lives, or while a lock is left for it
    fi
  done 2>/dev/null <"$owner" || true
  if ((${#keep[@]})); then printf '%s\n' "${keep[@]}" >"$owner"; else rm -f "$owner"; fi
  [[ $locked == 1 ]] || for d in "${made[@]}"; do rmdir "$d" 2>/dev/null || true; done  # if left empty
}
forward() {
  [[ -n $child ]] || return 0
  if [[ $1 == INT ]]; then  # the terminal sends Ctrl-C to its whole foreground group, Snakemake included
    local s f
    s=$(cat "/proc/$$/stat" 2>/dev/null) || s=
    s=${s##*) }
    read -ra f <<<"$s"
    [[ ${#f[@]} -gt 5 && ${f[2]} == "${f[5]}" ]] && return 0  # pgrp == the terminal's foreground group
  fi
  kill -s "$1" "$child" 2>/dev/null || true
}
trap cleanup EXIT
trap 'forward INT' INT
trap 'forward TERM' TERM
# an asynchronous command ignores INT/QUIT in a script: give Snakemake (and its jobs) the defaults back
( trap - INT QUIT; exec "$root/.venv/bin/snakemake" "$@" ) <&0 &
child=$!
start=$(proc_start "$child")  # empty only when it has ended already (then it holds no lock)
[[ -z $start ]] || { echo "$host $child $start" >>"$owner"; } 2>/dev/null || true
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do  # a trapped signal ends `wait` early: wait for Snakemake itself
  rc=0
  wait "$child" || rc=$?
done
smk_rc=$rc
exit "$rc"
