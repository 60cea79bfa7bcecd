#!/usr/bin/env bash
# Renders dashboards/omnibox-preview.png: a PREVIEW of dashboards/omnibox.json (not a
# Grafana screenshot). It
#   1. builds and runs the traffic driver (the dashboard_preview example) for PREVIEW_SECONDS
#      (default 180): a real relay + inbox against the local PostgreSQL and RabbitMQ,
#      serving omnibox's metrics on loopback;
#   2. has a throwaway local Prometheus (2 s scrape interval, temporary data dir) scrape it;
#   3. serves render.html, which reads omnibox.json, runs each panel's own PromQL against
#      that Prometheus over the run's window and draws the panels in the dashboard's grid;
#   4. screenshots the page with headless Chromium.
# Everything listens on 127.0.0.1 only and is stopped on exit.
#
# Needs: prometheus and chromium (`apt-get install -y prometheus chromium`), cargo,
# python3, PostgreSQL (DATABASE_URL) and RabbitMQ (AMQP_URL) up.
#
#   examples/dashboard_preview/run.sh                  # 3-minute run -> dashboards/omnibox-preview.png
#   PREVIEW_SECONDS=60 examples/dashboard_preview/run.sh /tmp/quick.png
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dash=$root/dashboards
out=$(realpath -m "${1:-$dash/omnibox-preview.png}")
run_seconds=${PREVIEW_SECONDS:-180}
metrics_port=${PREVIEW_METRICS_PORT:-19464}
prom_port=${PREVIEW_PROMETHEUS_PORT:-19090}
http_port=${PREVIEW_HTTP_PORT:-19080}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/omnibox-target}

for tool in prometheus chromium cargo python3 curl; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool (apt-get install -y prometheus chromium curl python3)" >&2
    exit 1
  }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # url what
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 did not come up at $1" >&2
  return 1
}

echo "== building the driver"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p omnibox-examples --example dashboard_preview
driver="$CARGO_TARGET_DIR/debug/examples/dashboard_preview"

echo "== starting Prometheus on 127.0.0.1:$prom_port"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  evaluation_interval: 2s
scrape_configs:
  # omnibox's job label is omnibox_job: the default scrape settings keep it as it is.
  - job_name: omnibox_preview
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$prom_port/-/ready" Prometheus

echo "== running the driver for ${run_seconds} s"
start=$(date +%s)
RUST_BACKTRACE=0 PREVIEW_SECONDS=$run_seconds PREVIEW_METRICS_ADDR="127.0.0.1:$metrics_port" \
  timeout $((run_seconds + 120)) "$driver"
end=$(date +%s)

echo "== rendering the panels"
python3 "$here/serve.py" --port "$http_port" --dashboards "$root" \
  --prometheus "http://127.0.0.1:$prom_port" &
pids+=($!)
wait_for "http://127.0.0.1:$http_port/dashboards/omnibox.json" "the preview server"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$work/chromium" --window-size=1600,1760 \
  --virtual-time-budget=30000 --screenshot="$out" \
  "http://127.0.0.1:$http_port/examples/dashboard_preview/render.html?start=$start&end=$end" 2>"$work/chromium.log"
echo "== wrote $out ($(du -k "$out" | cut -f1) KB), window $(date -ud "@$start" +%FT%TZ) .. $(date -ud "@$end" +%FT%TZ)"
