#!/usr/bin/env bash
# The main job, from a fresh machine: set up .venv, build an example model and its .mar with
# torch-model-archiver, start the server with it (secure defaults: token auth on), send one
# prediction with the inference token, print the answer, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
PY=.venv/bin/python
DEMO=.demo
rm -rf "$DEMO" && mkdir -p "$DEMO/model_store"

echo "== building the example model and archive"
"$PY" examples/mlp/build_model.py "$DEMO"
.venv/bin/torch-model-archiver --model-name mlp --version 1.0 \
  --serialized-file "$DEMO/mlp.pt" --handler base_handler \
  --export-path "$DEMO/model_store" --force

# Free ports, so the demo never collides with anything already listening.
read -r P1 P2 P3 < <("$PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
cat > "$DEMO/config.properties" <<CFG
inference_address=http://127.0.0.1:$P1
management_address=http://127.0.0.1:$P2
metrics_address=http://127.0.0.1:$P3
model_store=model_store
load_models=mlp=mlp.mar
default_workers_per_model=1
CFG

cd "$DEMO"
stop() { ../.venv/bin/torchserve --stop || true; }
trap stop EXIT
echo "== starting the server"
../.venv/bin/torchserve --start --ncs --ts-config config.properties --model-store model_store

TOKEN=$(../.venv/bin/python -c "import json; print(json.load(open('key_file.json'))['inference']['key'])")
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data @sample.json "http://127.0.0.1:$P1/predictions/mlp")
  [ "$code" = "200" ] && break
  sleep 0.2
done
echo "== POST /predictions/mlp"
curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data @sample.json "http://127.0.0.1:$P1/predictions/mlp"
echo
