"""``--trust DIR`` and ``--allow-unsigned``: the trust options of ``bedside verify``, ``replay`` and ``monitor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bedside import trust as _trust
from bedside.trust import TrustSettings


def trust_options(f: Any) -> Any:
    """Adds ``trust_dir`` and ``allow_unsigned`` parameters."""
    f = click.option("--allow-unsigned", is_flag=True,
                     help="Development only: accept unsigned bundles and unknown signers (says so loudly: "
                          "stderr, summary, alarm log).")(f)
    f = click.option("--trust", "trust_dir", envvar="BEDSIDE_TRUST_DIR", default=None,
                     type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                     help=f"Trusted signing keys, one PEM *.pub each [default: {_trust.DEFAULT_TRUST_DIR}; "
                          "env BEDSIDE_TRUST_DIR].")(f)
    return f


def trust_settings(trust_dir: Path | None, allow_unsigned: bool) -> TrustSettings:
    """The settings from the options, warning on stderr when unsigned bundles are allowed."""
    if allow_unsigned:
        click.echo("WARNING: --allow-unsigned: bundles without a trusted signature are accepted; for development "
                   "only, never on a ward", err=True)
    return TrustSettings(trust_dir or _trust.DEFAULT_TRUST_DIR, allow_unsigned)


def unsigned_warning(bundle: Any) -> str | None:
    """A loud line when ``bundle`` was accepted without a trusted signature, else None."""
    signer = getattr(bundle, "signer", None)
    if bundle is None or signer is None or signer.trusted:
        return None
    who = "unsigned" if signer.key_id is None else f"signed by the untrusted key {signer.key_id}"
    return (f"WARNING: model {bundle.version}: {who}, accepted only because of --allow-unsigned (development); "
            "the bedside refuses it without that flag")
