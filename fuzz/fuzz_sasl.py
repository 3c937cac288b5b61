"""Fuzz target: the SASL tokens a client sends, fed to the server's mechanisms
(:mod:`pylog.security.sasl`, :mod:`pylog.security.scram`).

    pip install atheris && python fuzz/fuzz_sasl.py -atheris_runs=1000000

The first byte of an input picks the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and
whether the exchange starts with a real client-first message; the rest is cut at 0xFF
bytes into the tokens of one exchange.

Contract checked, per input:

* ``step`` returns bytes or raises SaslAuthenticationFailed (the exchange is then over:
  any further step raises IllegalSaslState) — never another exception;
* an exchange completes only with the user's real password (the fuzzer cannot forge a
  SCRAM proof or a PLAIN password it does not know), and no step answers after a
  failure.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pylog.errors import IllegalSaslState, SaslAuthenticationFailed  # noqa: E402
from pylog.security.sasl import new_server  # noqa: E402
from pylog.security.scram import ScramClient, ScramCredential, new_credential  # noqa: E402

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASSWORD = "fuzz-password-not-guessable-0123456789"
#: One user with both SCRAM credentials (fixed salt: made once, 4096 iterations each).
CREDS: Dict[str, Dict[str, ScramCredential]] = {
    "u": {m: new_credential(m, PASSWORD, 4096, salt=b"fuzz-salt") for m in MECHANISMS[1:]}}


def one_input(data: bytes) -> None:
    if not data:
        return
    mechanism = MECHANISMS[data[0] % 3]
    tokens = data[1:].split(b"\xff")[:4]
    server = new_server(mechanism, CREDS.get)
    if data[0] & 0x80 and mechanism != "PLAIN":  # a real first message, then fuzzed finals
        server.step(ScramClient(mechanism, "u", "not-the-password").first())
    failed = False
    for token in tokens:
        try:
            answer = server.step(token)
        except SaslAuthenticationFailed:
            assert not server.complete
            failed = True
            continue
        except IllegalSaslState:
            assert failed or server.complete
            continue
        assert not failed, "a step answered after the exchange failed"
        assert isinstance(answer, bytes)
    assert not server.complete, f"{mechanism} completed without the password: {data!r}"


def main() -> None:  # pragma: no cover - run by hand with atheris
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
