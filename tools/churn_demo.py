"""The tables of docs/churn.md, made again: the churn study against nginx (HTTP and
HTTPS), in a private namespace with captures, and the Nagle study.

    python -m tools.churn_demo [--only plain|tls|netns|nagle]

Each section prints the command it ran and its output. Every load is bounded
(a few seconds); nginx is started and stopped here; the namespace run needs root.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme

from tools.nginx import Nginx

POOLSVC = [sys.executable, "-m", "poolsvc"]


def show(args: list[str]) -> None:
    print("```\npoolsvc " + " ".join(args) + "\n```\n\n```")
    proc = subprocess.run([*POOLSVC, *args], capture_output=True, text=True, timeout=600)
    print((proc.stdout + proc.stderr).rstrip() + "\n```\n", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["plain", "tls", "netns", "nagle"])
    only = p.parse_args().only
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        chain, key, pem = tmp / "chain.pem", tmp / "key.pem", tmp / "ca.pem"
        cert.private_key_pem.write_to_path(str(key))
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        ca.cert_pem.write_to_path(str(pem))
        nginx = None
        if only in (None, "plain", "tls"):
            (tmp / "nginx").mkdir()
            nginx = Nginx(tmp / "nginx", tls=(chain, key))
            nginx.start()
        try:
            if nginx is not None and only in (None, "plain"):
                show(["churn", f"http://{nginx.host}:{nginx.port}/", "--workers", "1",
                      "--rate", "2000", "--duration", "5"])  # fmt: skip
            if nginx is not None and only in (None, "tls"):
                show(["churn", f"https://127.0.0.1:{nginx.tls_port}/", "--cacert", str(pem),
                      "--workers", "1", "--rate", "300", "--duration", "5"])  # fmt: skip
        finally:
            if nginx is not None:
                nginx.stop()
        if only in (None, "netns"):
            captures = tmp / "captures"
            captures.mkdir()
            show(["churn", "--netns", "--capture", str(captures), "--workers", "1", "--rate",
                  "400", "--duration", "4"])  # fmt: skip
        if only in (None, "nagle"):
            show(["churn", "--nagle", "--workers", "1", "--size", "16", "--duration", "3"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
