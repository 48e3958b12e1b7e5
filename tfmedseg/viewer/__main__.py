"""``python -m tfmedseg.viewer``: start the local web viewer (see ``docs/viewer.md``).

Examples:
    python -m tfmedseg.viewer --root ~/scans --models saved_models/
    python -m tfmedseg.viewer --root /data/lits --models saved_models/ --port 9000

The server binds to the loopback interface (127.0.0.1) unless ``--host`` says otherwise; it reads
only under ``--root`` and writes only into its own temporary work folder.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

from tfmedseg.command import SignalStop, report_user_errors
from tfmedseg.errors import InvalidInputError
from tfmedseg.logs import add_verbosity_options, configure_logging

__all__ = ["build_parser", "main", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfmedseg.viewer",
        description="Local web viewer: open a NIfTI file, a DICOM series folder or a finished run directory under --root, "
                    "segment it with an exported model from --models, look at the overlays in three views, read volumes, "
                    "lesions and the SIRT plan, download the label map, DICOM-SEG and overlay series.",
        epilog="Open the printed address in a browser. See docs/viewer.md.",
    )
    parser.add_argument("--root", type=Path, required=True, help="folder the file picker may read (nothing outside it)")
    parser.add_argument("--models", type=Path, default=None,
                        help="folder of exported models (SavedModel versions with metadata.json, e.g. saved_models/)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}: only this computer can connect)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="largest accepted upload in MB (default 512)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for uploads and downloads (default: a new temporary folder, never inside --root)")
    add_verbosity_options(parser)
    return parser


def serve(args: argparse.Namespace) -> None:
    """Build the application and run it on uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise InvalidInputError("the viewer needs its extra: pip install 'tfmedseg[viewer]' (starlette, uvicorn)",
                                path="tfmedseg.viewer") from exc
    from tfmedseg.viewer.app import DEFAULT_MAX_UPLOAD_MB, ViewerConfig, create_app

    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"must lie in [0, 65535], got {args.port}", path="--port")
    _check_can_listen(args.host, args.port)  # before anything is made: uvicorn would log it and exit 3
    config = ViewerConfig(args.root, args.models, work_dir=args.work_dir,
                          max_upload_mb=args.max_upload_mb if args.max_upload_mb is not None else DEFAULT_MAX_UPLOAD_MB)
    app = create_app(config)
    if args.host not in _LOOPBACK:
        print(f"warning: binding to {args.host}: other computers on the network can open the viewer and read under "
              f"{config.root}", file=sys.stderr)
    models = app.state.viewer.models()
    print(f"tfmedseg viewer: root {config.root}, {len(models)} model(s)"
          + (f" under {config.models}" if config.models else " (no --models)"))
    # log_config=None: uvicorn's loggers go through tfmedseg's logging set-up (-v / -q) instead of its own handlers
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_config=None, log_level="warning",
                                           access_log=False))

    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets=sockets)
        for sock in server.servers[0].sockets if server.servers else ():
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"open http://{shown}:{port}/  (Ctrl+C stops the viewer)", flush=True)

    server.startup = startup
    stopped_by = []  # the signals uvicorn caught to shut down
    handle_exit = server.handle_exit

    def record_exit(sig, frame):
        stopped_by.append(sig)
        handle_exit(sig, frame)

    server.handle_exit = record_exit  # uvicorn installs self.handle_exit for SIGINT and SIGTERM while it serves
    server.run()
    # After a graceful shutdown uvicorn restores the previous handlers and raises the caught signal again; with
    # SIGINT ignored (a background job) that does nothing and run() returns: report the stop like any other
    if stopped_by:
        raise SignalStop(stopped_by[0]) if stopped_by[0] != signal.SIGINT else KeyboardInterrupt()


def _check_can_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once as uvicorn will (``SO_REUSEADDR``) and let it go again.

    Raises:
        InvalidInputError: The address cannot be used (a port in use, a host name that does not resolve or
            is not this computer's), naming ``--port`` / ``--host``.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise InvalidInputError(f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}", path="--host") from exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                                    + ("; choose another --port (0 picks a free one)" if port else ""),
                                    path="--port") from exc


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 user error, 130 stopped by Ctrl+C, 143 by SIGTERM)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    configure_logging(args)
    return report_user_errors(lambda: serve(args), "the viewer stopped; rerun the same command to start it again")


if __name__ == "__main__":
    sys.exit(main())
