"""``python -m devices`` runs the ``devices`` command."""

from devices.cli import main

main()
