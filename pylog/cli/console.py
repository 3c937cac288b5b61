"""``pylog console`` and ``pylog serve --console``: start the web console (pylog.console).

* ``pylog console --bootstrap-server HOST:PORT [--listen 127.0.0.1:8080]
  [--command-config FILE]`` runs it on its own against any pylog broker or cluster;
  Kafka's client properties in ``--command-config`` say how to reach a secured
  listener.  With ``security.protocol=SASL_*`` every visitor logs in as a user of the
  cluster (the mechanism is ``sasl.mechanism``; ``sasl.jaas.config`` is optional and
  only serves the sampler).
* ``pylog serve --console HOST:PORT`` serves it from the broker, reading the cluster
  through the broker's own listener: PLAINTEXT if it has one, else SASL_PLAINTEXT
  (visitors log in), else SSL / SASL_SSL with the listener's trust store and key.
  A broker started with --console and no --metrics-listener gets one on a free
  loopback port, since the console reads traffic and events from it.
"""
from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from typing import Any, Dict, Optional

from pylog.errors import InvalidConfig

__all__ = ["add_console_parser", "start_for_server", "DEFAULT_CONSOLE"]

DEFAULT_CONSOLE = "127.0.0.1:8080"
log = logging.getLogger("pylog.console")


def add_console_parser(sub: Any) -> None:
    c = sub.add_parser("console", help="the web console of a pylog broker or cluster",
                       description="Serves the console (overview, topics, consumer groups, events, records) at "
                                   "--listen, reading the cluster at --bootstrap-server.  Ctrl-C stops it.")
    c.add_argument("--bootstrap-server", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                   help="any broker of the cluster")
    c.add_argument("--listen", default=DEFAULT_CONSOLE, metavar="HOST:PORT",
                   help=f"where the console listens (default {DEFAULT_CONSOLE}: loopback only)")
    c.add_argument("--command-config", default=None, metavar="FILE",
                   help="Kafka client properties for a secured listener (security.protocol, ssl.*, "
                        "sasl.mechanism); with SASL, visitors log in as users of the cluster")
    c.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    c.set_defaults(func=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    from pylog.cli.clientconfig import load_command_config
    from pylog.console import Console
    from pylog.console.app import parse_address

    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = parse_address(args.listen, "--listen")
        kw = load_command_config(args.command_config, login_optional=True)
    except InvalidConfig as exc:
        print(f"pylog console: {exc}", file=sys.stderr)
        return 2
    mech = kw.pop("sasl_mechanism", None)
    console = Console(args.bootstrap_server, host=host, port=port, login_mechanism=mech, **kw)
    try:
        console.start()
    except OSError as exc:
        print(f"pylog console: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("the console listens on %s, not on loopback: anyone who reaches it sees the cluster%s",
                    args.listen, "" if mech else " (no login: the cluster's listener needs none)")
    print(f"pylog console: serving {console.url} for {args.bootstrap_server}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        console.close()
    return 0


def start_for_server(server: Any, address: str) -> Any:
    """Start a Console at ``address`` reading the cluster through ``server``'s own
    listener (module docstring); returns it (call ``close()``).  InvalidConfig when the
    address is bad; OSError when it cannot be bound."""
    from pylog.console import Console
    from pylog.console.app import parse_address
    from pylog.server.tls import build_client_context

    host, port = parse_address(address, "--console")
    config = server.config
    by_proto: Dict[str, Any] = {}
    for _configured, bound in server.bound:
        by_proto.setdefault(bound.security_protocol, bound)
    chosen = None
    for proto in ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"):
        if proto in by_proto:
            chosen = by_proto[proto]
            break
    if chosen is None:
        raise InvalidConfig("--console: the broker has no listener the console can use")
    ssl_context = None
    mech: Optional[str] = None
    if chosen.security_protocol in ("SSL", "SASL_SSL"):
        # The broker's own listener, in this process, on its bound address: checking its
        # certificate would prove nothing (and a self-signed one would fail); the keystore
        # is still presented as the client certificate when the listener asks for one.
        ssl_context = build_client_context(config.tls[chosen.name])
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl.CERT_NONE
    if chosen.security_protocol.startswith("SASL_"):
        mechs = config.sasl_mechanisms.get(chosen.name) or ("PLAIN",)
        mech = "SCRAM-SHA-512" if "SCRAM-SHA-512" in mechs else mechs[0]
    bhost = "127.0.0.1" if chosen.host in ("0.0.0.0", "", "::") else chosen.host
    bootstrap = f"[{bhost}]:{chosen.port}" if ":" in bhost else f"{bhost}:{chosen.port}"
    # the sampler logs in as the broker itself when the console uses the inter-broker listener
    service = config.inter_broker_sasl if mech and chosen.name == config.inter_broker_listener_name else None
    console = Console(bootstrap, host=host, port=port, ssl_context=ssl_context, login_mechanism=mech, sasl=service)
    console.start()
    return console


