"""The alarm system a model bundle calls for: its labels and thresholds, alarms only for validated labels.

A label whose validation AUROC is not credibly above chance (the bundle's ``label_validation``,
docs/bundle.md) gets no alarm: the engine still scores, smooths, logs and shows its risk.
"""

from __future__ import annotations

import logging

from bedside.alarm_config import AlarmConfig
from bedside.alarms import AlarmSystem
from bedside.bundle import Bundle

log = logging.getLogger(__name__)


def alarm_system_for(config: AlarmConfig, bundle: Bundle | None, hop_s: float) -> AlarmSystem:
    """A fresh alarm system for ``bundle`` (none: technical and heart-rate alarms only), windows every ``hop_s`` s."""
    if bundle is None:
        return AlarmSystem(config, [], {}, hop_s, validated=())
    if bundle.unvalidated_labels:
        log.warning("labels not validated (risks logged, never alarmed): %s", ", ".join(bundle.unvalidated_labels))
    return AlarmSystem(config, bundle.labels, bundle.thresholds, hop_s, validated=bundle.validated_labels)
