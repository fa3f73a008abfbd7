#!/usr/bin/env bash
# Builds limner's CPU container image with podman and checks it as a client would.
# Usage: scripts/container.sh [build|smoke|all]   (default: all)
#   build  builds $IMAGE from Dockerfile.
#   smoke  runs $IMAGE with a temporary volume and an API key, waits for /healthz, draws an
#          image with the official openai SDK, checks the PNG, the healthcheck, the user
#          (uid 10001), an image drawn with no network at all, then sends SIGTERM
#          (podman stop) and checks the exit status is 0.
# Environment:
#   IMAGE          the tag built and run (localhost/limner:cpu)
#   BASE           the base image (python:3.11-slim-bookworm). Where it is not on this
#                  machine and cannot be pulled (no registry reachable), a Debian bookworm
#                  base is made with debootstrap as localhost/limner-base:bookworm (root,
#                  debootstrap and Debian's mirror needed).
#   TORCH_VERSION  2.13.0; TORCH_INDEX https://download.pytorch.org/whl/cpu; EXTRAS
#                  diffusers,openvino: passed to the build (see Dockerfile). Where the torch
#                  index cannot be reached and a local wheel torch-$TORCH_VERSION+cpu-cp311
#                  lies in $PIP_FIND_LINKS or /opt/wheels, it is put in wheels/ and torch
#                  comes from there (TORCH_INDEX empty: PyPI for the rest).
#   PYTHON         the interpreter with the openai SDK for the smoke check (.venv/bin/python,
#                  else python3).
# If $PIP_CERT is set (pip behind a TLS-inspecting proxy), that bundle is copied to certs/ so
# that pip in the build stage trusts the same CAs; it does not reach the final image.
# Exits 77 when podman cannot build or run containers on this machine (the reason on stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-all}"
IMAGE="${IMAGE:-localhost/limner:cpu}"
BASE="${BASE:-python:3.11-slim-bookworm}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
EXTRAS="${EXTRAS-diffusers,openvino}"
LOCAL_BASE=localhost/limner-base:bookworm

say() { echo "container.sh: $*" >&2; }
cannot() { say "cannot run here: $*"; exit 77; }

command -v podman >/dev/null 2>&1 || cannot "podman is not installed"

# The base: present, pulled, or made here with debootstrap.
ensure_base() {
  if podman image exists "$BASE"; then return; fi
  if podman pull -q "$BASE" >/dev/null 2>&1; then return; fi
  say "$BASE cannot be pulled; using $LOCAL_BASE (debootstrap, Debian bookworm)"
  BASE="$LOCAL_BASE"
  if podman image exists "$BASE"; then return; fi
  [ "$(id -u)" = 0 ] || cannot "no registry reachable for $BASE, and debootstrap needs root"
  command -v debootstrap >/dev/null 2>&1 \
    || cannot "no registry reachable for $BASE, and debootstrap is not installed"
  local mirror rootfs
  mirror="$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' \
             /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2 || { rm -rf "$rootfs"; cannot "debootstrap failed"; }
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

# How podman runs a container here. Plain first; where crun refuses (cgroup v1 with a
# controller on the v2 hierarchy, "hybrid mode"; no CAP_SYS_RESOURCE for its default
# rlimits), runc with limits at or under this shell's.
GLOBAL=()
LIMITS=()
pick_runtime() {
  local out
  if out="$(podman run --rm --no-healthcheck "$BASE" true 2>&1)"; then return; fi
  say "podman run with its defaults fails here: $out"
  local nofile nproc
  nofile="$(ulimit -Sn)"; [ "$nofile" = unlimited ] || [ "$nofile" -le 16384 ] || nofile=16384
  nproc="$(ulimit -Su)"; [ "$nproc" = unlimited ] || [ "$nproc" -le 4096 ] || nproc=4096
  [ "$nofile" = unlimited ] && nofile=16384
  [ "$nproc" = unlimited ] && nproc=4096
  LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  if command -v runc >/dev/null 2>&1; then
    GLOBAL=(--runtime runc)
  fi
  if out="$(podman "${GLOBAL[@]}" run --rm --no-healthcheck "${LIMITS[@]}" "$BASE" true 2>&1)"; then
    say "using: podman ${GLOBAL[*]} run ${LIMITS[*]}"
    return
  fi
  cannot "podman cannot run a container here (also with ${GLOBAL[*]:-crun} ${LIMITS[*]}): $out"
}

local_torch_wheel() {
  local dir
  for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
    dir="${dir#file://}"
    ls "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-cp311-*x86_64.whl 2>/dev/null | head -1 \
      && return
  done
  return 0
}

reachable() {
  python3 - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10)
EOF
}

build() {
  if [ -n "$TORCH_INDEX" ] && ! reachable "$TORCH_INDEX"; then
    wheel="$(local_torch_wheel)"
    if [ -n "$wheel" ]; then
      say "$TORCH_INDEX is not reachable; torch from $wheel (in wheels/)"
      cp -f "$wheel" wheels/
      TORCH_INDEX=""
    else
      say "warning: $TORCH_INDEX is not reachable and no local torch wheel was found"
    fi
  fi
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    cp -f "$PIP_CERT" certs/host-pip.crt
  fi
  say "building $IMAGE from $BASE (torch $TORCH_VERSION from ${TORCH_INDEX:-wheels/ or PyPI})"
  local start=$SECONDS
  podman "${GLOBAL[@]}" build --format docker "${LIMITS[@]}" \
    --build-arg BASE="$BASE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
    --build-arg TORCH_INDEX="$TORCH_INDEX" --build-arg EXTRAS="$EXTRAS" \
    -t "$IMAGE" -f Dockerfile . >&2 || { say "podman build failed"; exit 1; }
  say "built $IMAGE in $((SECONDS - start)) s: $(podman image inspect --format '{{.Size}}' "$IMAGE" \
        | awk '{printf "%.0f MB", $1 / 1e6}')"
}

smoke() {
  podman image exists "$IMAGE" || { say "no image $IMAGE: run '$0 build' first"; exit 1; }
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
  fi
  env -u PYTHONPATH "$py" -c 'import openai' \
    || { say "$py has no openai SDK (set PYTHON)"; exit 1; }
  local tag=$$ port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  volume="limner-smoke-$tag"
  name="limner-smoke-$tag"
  offline="limner-offline-$tag"
  trap 'podman rm -f -t 0 "$name" "$offline" >/dev/null 2>&1 || true;
        podman volume rm -f "$volume" >/dev/null 2>&1 || true' EXIT
  podman volume create "$volume" >/dev/null
  say "running $IMAGE as $name on 127.0.0.1:$port, volume $volume at /data"
  podman "${GLOBAL[@]}" run -d --name "$name" "${LIMITS[@]}" -p "127.0.0.1:$port:8000" \
    -v "$volume:/data" -e LIMNER_API_KEYS=sk-smoke "$IMAGE" >/dev/null

  local start=$SECONDS
  until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" \
        2>/dev/null; do
    if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
      podman logs "$name" >&2 || true
      say "the container exited before /healthz answered"; exit 1
    fi
    [ $((SECONDS - start)) -lt 300 ] || { podman logs "$name" >&2; say "no /healthz in 300 s"; exit 1; }
    sleep 1
  done
  say "/healthz answered after $((SECONDS - start)) s"

  env -u PYTHONPATH "$py" - "http://127.0.0.1:$port" <<'EOF'
import base64, struct, sys, time, urllib.error, urllib.request
import openai

base = sys.argv[1]
try:
    urllib.request.urlopen(base + "/v1/models", timeout=10)
    raise SystemExit("/v1/models answered without a key")
except urllib.error.HTTPError as exc:
    assert exc.code == 401, exc.code
client = openai.OpenAI(base_url=base + "/v1", api_key="sk-smoke", max_retries=0, timeout=600)
start = time.monotonic()
result = client.images.generate(model="gpt-image-1", prompt="a cute baby sea otter",
                                size="1024x1024", response_format="b64_json")
took = time.monotonic() - start
assert result.data, result
png = base64.b64decode(result.data[0].b64_json or "")
assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
width, height = struct.unpack(">II", png[16:24])
assert (width, height) == (1024, 1024), (width, height)
print(f"container.sh: openai SDK images.generate: PNG {width}x{height}, {len(png)} bytes, "
      f"{took:.1f} s", file=sys.stderr)
EOF

  podman "${GLOBAL[@]}" healthcheck run "$name" >/dev/null \
    || { say "the image's HEALTHCHECK failed"; exit 1; }
  say "HEALTHCHECK (podman healthcheck run): healthy"
  local uid
  uid="$(podman exec "$name" id -u)"
  [ "$uid" = 10001 ] || { say "the server runs as uid $uid, not 10001"; exit 1; }
  [ "$(podman top "$name" user | tail -n +2 | sort -u)" = limner ] \
    || { say "a process in the container is not user limner"; podman top "$name" user >&2; exit 1; }
  podman exec "$name" test -s /data/signing.key || { say "no signing.key in the volume"; exit 1; }
  say "runs as uid $uid (limner); DATA_DIR /data is the volume (signing.key written)"

  # SIGTERM while a request is in flight: it finishes (200), then the exit status is 0.
  start=$SECONDS
  env -u PYTHONPATH "$py" - "http://127.0.0.1:$port" "$name" <<'EOF'
import subprocess, sys, threading, time
import openai

base, name = sys.argv[1:]
client = openai.OpenAI(base_url=base + "/v1", api_key="sk-smoke", max_retries=0, timeout=600)
answer: list[object] = []
ended: list[float] = []

def draw() -> None:
    try:
        result = client.images.generate(model="gpt-image-1", prompt="a lighthouse", n=8,
                                        size="1536x1024", response_format="b64_json")
        answer.append(len(result.data or []))
    except Exception as exc:
        answer.append(exc)
    ended.append(time.monotonic())

worker = threading.Thread(target=draw)
worker.start()
time.sleep(0.3)
stopping = time.monotonic()
stop = subprocess.Popen(["podman", "stop", "-t", "40", name], stdout=subprocess.DEVNULL)
worker.join()
stop.wait()
in_flight = bool(ended) and ended[0] > stopping
assert answer == [8], answer
print(f"container.sh: a request in flight at SIGTERM: {'yes' if in_flight else 'no (done first)'};"
      f" it got its 8 images", file=sys.stderr)
EOF
  local code
  code="$(podman inspect --format '{{.State.ExitCode}}' "$name")"
  say "podman stop (SIGTERM): exited with status $code after $((SECONDS - start)) s"
  podman logs "$name" 2>&1 | tail -4 >&2
  [ "$code" = 0 ] || { say "expected exit status 0"; exit 1; }

  # No network at all: the embedded model needs none. The same volume, a second start.
  say "running $IMAGE with --network none"
  podman "${GLOBAL[@]}" run -d --name "$offline" "${LIMITS[@]}" --network none \
    -v "$volume:/data" "$IMAGE" >/dev/null
  podman exec -i "$offline" python3 - <<'EOF'
import base64, json, struct, sys, time, urllib.request

for _ in range(300):
    try:
        urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=2)
        break
    except OSError:
        time.sleep(1)
body = json.dumps({"model": "gpt-image-1", "prompt": "a red heart", "size": "1024x1024"})
request = urllib.request.Request("http://127.0.0.1:8000/v1/images/generations", body.encode(),
                                 {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=600))
png = base64.b64decode(answer["data"][0]["b64_json"])
assert png[:8] == b"\x89PNG\r\n\x1a\n"
print("container.sh: with --network none: PNG %dx%d" % struct.unpack(">II", png[16:24]),
      file=sys.stderr)
EOF
  podman stop -t 40 "$offline" >/dev/null
  code="$(podman inspect --format '{{.State.ExitCode}}' "$offline")"
  [ "$code" = 0 ] || { say "--network none: exit status $code on SIGTERM"; exit 1; }
  podman rm -f "$offline" >/dev/null

  # SIGTERM one second after the start, before limner has its handlers: it still ends
  # (tini passes it on), long before the stop timeout's SIGKILL.
  podman "${GLOBAL[@]}" run -d --name "$offline" "${LIMITS[@]}" --network none "$IMAGE" >/dev/null
  sleep 1
  start=$SECONDS
  podman stop -t 30 "$offline" >/dev/null 2>&1
  code="$(podman inspect --format '{{.State.ExitCode}}' "$offline")"
  say "SIGTERM 1 s after the start: exit status $code after $((SECONDS - start)) s"
  [ "$code" != 137 ] || { say "SIGTERM was ignored until SIGKILL"; exit 1; }
  say "smoke check passed"
}

case "$action" in
  build) ensure_base; pick_runtime; build ;;
  smoke) BASE="$IMAGE"; pick_runtime; smoke ;;
  all) ensure_base; pick_runtime; build; smoke ;;
  *) echo "usage: $0 [build|smoke|all]" >&2; exit 2 ;;
esac
