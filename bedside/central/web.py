"""The overview in a browser: textual-serve runs ``python -m bedside.central.overview`` for each browser
session and streams it to xterm.js over a websocket (``bedside central --web HOST:PORT``).

textual-serve has no login of its own: keep ``--web`` on 127.0.0.1 (the default) and publish it
through a reverse proxy that authenticates and terminates TLS (docs/central.md).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def overview_command(db: str | Path) -> str:
    """The shell command textual-serve starts per browser session."""
    return f"{shlex.quote(sys.executable)} -m bedside.central.overview --db {shlex.quote(str(Path(db).resolve()))}"


def serve_overview(db: str | Path, host: str, port: int) -> int:
    """Serve until interrupted (Ctrl+C, SIGTERM); 0."""
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise ImportError(f"--web needs textual-serve ({exc}): pip install 'cromotex-bedside[central]'") from exc
    Server(overview_command(db), host=host, port=port, title="CroMoTEX central").serve()
    return 0
