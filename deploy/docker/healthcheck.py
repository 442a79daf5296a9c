"""Docker HEALTHCHECK: GET a health path of the local service; exit 0 on 200, else 1.

Python's standard library only (the slim image has no curl)."""

import os
import sys
import urllib.request

path = sys.argv[1] if len(sys.argv) > 1 else "/health/live"
port = os.environ.get("AVAILABILITY_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`
    print(f"{path}: {exc}", file=sys.stderr)
    sys.exit(1)
