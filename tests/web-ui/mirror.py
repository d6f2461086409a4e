"""Mirrors the Restate web UI served by the reference server into a directory, for the web UI
tests only: restate-rs bundles no UI, and the UI's release zip is on no registry this machine
reaches, but the reference server installed from npm (tests/web-ui/package.json) serves it at
/ui/.

    python3 tests/web-ui/mirror.py OUT_DIR

Starts the reference server on free loopback ports with a temporary base directory, fetches
/ui/index.html and everything it references, transitively: src/href attributes, module imports
and preload lists in JavaScript, url(...) in CSS. Stops the server and leaves OUT_DIR holding
index.html and the assets, as an unpacked release would.
"""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent


def reference_binary():
    for path in (HERE / "node_modules").rglob("restate-server"):
        if path.is_file() and "restate-server-" in str(path):
            path.chmod(0o755)
            return path
    sys.exit("the reference server is not installed: run scripts/deps.sh test (npm ci --prefix tests/web-ui)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(), response.headers.get("content-type", "")


# Paths a file of the bundle can name: quoted strings and url(...) ending in an asset extension.
ASSET = re.compile(
    r"""(?:["'`(]|url\()\s*((?:\.{0,2}/)?[A-Za-z0-9_./@~-]+\.(?:js|mjs|css|woff2?|ttf|otf|svg|png|jpe?g|gif|ico|webp|json|webmanifest|wasm|txt|html))\s*["'`)]"""
)


def references(text, base_path):
    """Absolute /ui/... paths named in `text`, a file served at `base_path`."""
    found = set()
    for match in ASSET.finditer(text):
        name = match.group(1)
        if name.startswith("//") or "://" in name:
            continue
        if name.startswith("/"):
            path = name
        elif name.startswith("./") or name.startswith("../"):
            path = urllib.parse.urljoin(base_path, name)
        else:
            # Bare names: Vite's preload lists are relative to the base (`assets/x.js`), other
            # strings may be relative to the file; try both, keep what exists.
            found.add(urllib.parse.urljoin("/ui/", name))
            path = urllib.parse.urljoin(base_path, name)
        found.add(path)
    return {p for p in found if p.startswith("/ui/") and ".." not in p}


def mirror(origin, out):
    index, _ = fetch(origin + "/ui/")
    pending = ["/ui/"]
    seen = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            body, content_type = fetch(origin + path)
        except urllib.error.HTTPError:
            continue
        relative = path[len("/ui/"):] or "index.html"
        # The SPA answers index.html for unknown paths: keep only real files.
        if relative != "index.html" and "text/html" in content_type and body == index:
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        if relative.endswith((".html", ".js", ".mjs", ".css", ".json", ".webmanifest")):
            pending.extend(references(body.decode("utf-8", "replace"), path) - seen)
    return len(seen)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: mirror.py OUT_DIR")
    out = pathlib.Path(sys.argv[1])
    binary = reference_binary()
    base = pathlib.Path(tempfile.mkdtemp(prefix="restate-ui-origin-"))
    admin, ingress, fabric = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        RESTATE_NODE_NAME="ui-origin",
        RESTATE_BASE_DIR=str(base),
        RESTATE_LISTEN_MODE="tcp",
        RESTATE_ADMIN__BIND_ADDRESS=f"127.0.0.1:{admin}",
        RESTATE_INGRESS__BIND_ADDRESS=f"127.0.0.1:{ingress}",
        RESTATE_BIND_ADDRESS=f"127.0.0.1:{fabric}",
        RESTATE_ADVERTISED_ADDRESS=f"http://127.0.0.1:{fabric}/",
        RESTATE_LOG_FILTER="warn",
        RESTATE_DISABLE_TELEMETRY="true",
    )
    server = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    origin = f"http://127.0.0.1:{admin}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                fetch(origin + "/ui/")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("the reference server did not serve /ui/ within 60 s")
                time.sleep(0.2)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        count = mirror(origin, out)
        files = sum(1 for p in out.rglob("*") if p.is_file())
        print(f"mirrored {files} files of the web UI ({count} paths tried) into {out}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
