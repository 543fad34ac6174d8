"""The codes the bed's HL7 messages carry: IEEE 11073 MDC where one exists, else the local system.

MDC codes are the context-free 32-bit codes (partition x 65536 + term code) of ISO/IEEE 11073-10101,
as IHE PCD TF-2 writes them in CWE fields (``147842^MDC_ECG_HEART_RATE^MDC``). Everything the MDC
nomenclature has no term for is coded in the local system :data:`LOCAL` (HL7 reserves names starting
with "99" for local coding systems); docs/hl7.md lists each local code.
"""

from __future__ import annotations

#: Name of the local coding system (CWE-3 / CWE-6) for what MDC has no term for.
LOCAL = "99CROMOTEX"
MDC = "MDC"

# -- message profiles (MSH-21) -----------------------------------------------------------------------
PROFILE_PCD01 = ("IHE_PCD_001", "IHE PCD", "1.3.6.1.4.1.19376.1.6.1.1.1", "ISO")
PROFILE_PCD04 = ("IHE_PCD_ACM_001", "IHE PCD", "1.3.6.1.4.1.19376.1.6.4.4", "ISO")

# -- devices, metrics, units (MDC) -----------------------------------------------------------------
MDS = ("69965", "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS", MDC)
HEART_RATE = ("147842", "MDC_ECG_HEART_RATE", MDC)
BEAT_PER_MIN = ("264864", "MDC_DIM_BEAT_PER_MIN", MDC)
DIMLESS = ("262656", "MDC_DIM_DIMLESS", MDC)
SECOND = ("264320", "MDC_DIM_SEC", MDC)
#: OBR-4 of a PCD-01 observation set (SNOMED CT "monitoring of patient").
MONITORING = ("182777000", "monitoring of patient", "SCT")

# -- alarms (IHE PCD ACM) ---------------------------------------------------------------------------
EVT_ALARM = ("196616", "MDC_EVT_ALARM", MDC)  # OBR-4 of a PCD-04 report
EVT_HI_GT_LIM = ("196650", "MDC_EVT_HI_GT_LIM", MDC)  # a value above its limit (risk, hr_high)
EVT_LO_LT_LIM = ("196672", "MDC_EVT_LO_LT_LIM", MDC)  # a value below its limit (hr_low)
EVT_LEAD_DISCONN = ("196876", "MDC_EVT_LEAD_DISCONN", MDC)  # 3:268 lead disconnected
EVT_WAVE_ARTIF_ERR = ("197040", "MDC_EVT_WAVE_ARTIF_ERR", MDC)  # 3:432 artifact (poor signal quality)
ATTR_EVENT_PHASE = ("68481", "MDC_ATTR_EVENT_PHASE", MDC)
ATTR_ALARM_STATE = ("68482", "MDC_ATTR_ALARM_STATE", MDC)
ATTR_INACTIVATION_STATE = ("68483", "MDC_ATTR_ALARM_INACTIVATION_STATE", MDC)
ATTR_ALARM_PRIORITY = ("68484", "MDC_ATTR_ALARM_PRIORITY", MDC)
ATTR_ALERT_TYPE = ("68485", "MDC_ATTR_ALERT_TYPE", MDC)

#: Alarm name -> MDC event code of its alarm-identification OBX (the alarm's own name follows as the
#: local alternate code). Risk alarms (one per model label) are "value above its limit".
MDC_EVENTS: dict[str, tuple[str, str, str]] = {
    "hr_high": EVT_HI_GT_LIM,
    "hr_low": EVT_LO_LT_LIM,
    "lead_off": EVT_LEAD_DISCONN,
    "poor_signal": EVT_WAVE_ARTIF_ERR,
}
HEART_RATE_ALARMS = frozenset({"hr_high", "hr_low"})

PRIORITY = {"high": "PH", "medium": "PM", "low": "PL"}
ALERT_TYPE = {"physiological": "SP", "technical": "ST"}

# -- local codes ------------------------------------------------------------------------------------
SQI_MIN = ("sqi_min", "Lowest lead signal-quality index (0-1)", LOCAL)
ANALYSIS = ("analysis", "Analysis status of the window (scored, or why not)", LOCAL)
SIGNAL_TIME = ("signal_time", "Signal time since the session's first sample", LOCAL)
BED_STATE = ("bed_state", "Alarm state on the bed (IEC 60601-1-8)", LOCAL)
PREVIOUS_STATE = ("previous_state", "Previous alarm state on the bed", LOCAL)
CAUSE = ("cause", "What made the alarm change state", LOCAL)
VALIDATED = ("validated", "Label validated for alarms", LOCAL)
NOT_VALIDATED = ("not_validated", "Label NOT validated: display only, never alarms", LOCAL)
RISK_PREFIX = "risk."  # risk.<label>: smoothed risk of a model label (0-1)
THRESHOLD_PREFIX = "threshold."  # threshold.<label>: the bundle's decision threshold of that label
ALARM_PREFIX = "alarm."  # alarm.<name>: the bed's own alarm name (alternate code of every alarm event)


def risk_code(label: str) -> tuple[str, str, str]:
    return (RISK_PREFIX + label, f"{label} risk (smoothed)", LOCAL)


def threshold_code(label: str) -> tuple[str, str, str]:
    return (THRESHOLD_PREFIX + label, f"{label} decision threshold", LOCAL)


def alarm_code(name: str) -> tuple[str, str, str]:
    return (ALARM_PREFIX + name, f"{name} alarm", LOCAL)
