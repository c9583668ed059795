#!/usr/bin/env bash
# Installs the system programs the synthetic speech corpus needs: espeak-ng and flite (TTS engines),
# sox (resampling, speed warps) and the King James Bible text (public-domain sentences).
# Usage: bash scripts/install_system_deps.sh        (does nothing when they are already there)
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v sox >/dev/null || need+=(sox)
[ -e /usr/lib/bible.data ] || need+=(bible-kjv-text)
command -v bible >/dev/null || need+=(bible-kjv)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "missing system programs: ${need[*]}; install them with your package manager" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing system packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
