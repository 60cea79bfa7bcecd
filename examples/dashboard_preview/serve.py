#!/usr/bin/env python3
"""Loopback HTTP server for the dashboard preview.

Serves the repository root (examples/dashboard_preview/render.html, dashboards/omnibox.json) and forwards `/api/v1/...`
to the local Prometheus, so the page reads the dashboard and queries Prometheus from one
origin. Loopback only; standard library only.

    serve.py --port 19080 --dashboards . --prometheus http://127.0.0.1:19090
"""

import argparse
import functools
import http.server
import ipaddress
import urllib.error
import urllib.parse
import urllib.request


class Handler(http.server.SimpleHTTPRequestHandler):
    prometheus = ""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/api/v1/"):
            self.forward()
        else:
            super().do_GET()

    def forward(self):
        url = self.prometheus + self.path
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError as e:
            status, body = 502, str(e).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dashboards", required=True)
    p.add_argument("--prometheus", required=True)
    a = p.parse_args()
    host = urllib.parse.urlparse(a.prometheus).hostname or ""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"{a.prometheus}: loopback only")
    Handler.prometheus = a.prometheus.rstrip("/")
    handler = functools.partial(Handler, directory=a.dashboards)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
